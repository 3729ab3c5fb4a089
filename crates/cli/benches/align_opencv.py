"""Peer of the face_data bench's alignment: OpenCV on one thread aligns the very same CASIA
images, from the corpus the bench leaves behind, with the same steps as spherepipe's align:
read the file, decode the JPEG, fit a 5-point similarity onto the SphereFace template,
warpAffine (bilinear) to 96x112, encode the PNG. Two fits are timed: least squares (numpy's
lstsq on the similarity's four unknowns, what align's cp2tform computes; OpenCV 5's
estimateAffinePartial2D has no plain least-squares method) and LMEDS (as
../shared/bench/peers.py does).

Run right after the bench, with nothing else running:
  KEEP_CORPUS=/tmp/corpus cargo bench -p spherepipe-cli --bench face_data
  /tmp/peers-venv/bin/python crates/cli/benches/align_opencv.py /tmp/corpus
"""
import os, sys, time
import numpy as np, cv2

cv2.setNumThreads(1)
REF = np.array([[30.2946, 51.6963], [65.5318, 51.5014], [48.0252, 71.7366],
                [33.5493, 92.3655], [62.7299, 92.2041]], np.float32)
corpus = sys.argv[1]
faces = []
with open(os.path.join(corpus, "casia_landmark.txt")) as f:
    for line in f:
        rel, _label, *xy = line.split()
        faces.append((os.path.join(corpus, "casia", rel), np.array(xy, np.float32).reshape(5, 2)))


def least_squares(marks):
    """The similarity [[a, -b, tx], [b, a, ty]] taking marks onto REF, by least squares."""
    x, y = marks[:, 0], marks[:, 1]
    one, zero = np.ones(5), np.zeros(5)
    a = np.concatenate([np.stack([x, -y, one, zero], 1), np.stack([y, x, zero, one], 1)])
    p = np.linalg.lstsq(a, np.concatenate([REF[:, 0], REF[:, 1]]), rcond=None)[0]
    return np.array([[p[0], -p[1], p[2]], [p[1], p[0], p[3]]])


def lmeds(marks):
    return cv2.estimateAffinePartial2D(marks, REF, method=cv2.LMEDS)[0]


for name, fit in (("least squares", least_squares), ("LMEDS", lmeds)):
    best = 0.0
    for _ in range(3):
        t = time.perf_counter()
        for path, marks in faces:
            data = np.fromfile(path, np.uint8)
            img = cv2.imdecode(data, cv2.IMREAD_COLOR)
            face = cv2.warpAffine(img, fit(marks), (96, 112), flags=cv2.INTER_LINEAR)
            cv2.imencode(".png", face)
        best = max(best, len(faces) / (time.perf_counter() - t))
    print(f"opencv align ({name} fit) + png: {best:.0f} faces/s over {len(faces)} faces (1 thread, best of 3)")
