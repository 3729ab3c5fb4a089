"""Checks an ONNX model that `spherepipe export` wrote, with the ONNX project's own tools:
`onnx.checker.check_model`, then onnxruntime's features on aligned faces against the expected
FC1 (extract's `features.parquet`, or a JSON of rows such as PyTorch's).

  python onnx_check.py MODEL.onnx CARD.json FACES.parquet EXPECTED [--preprocess] [--faces N]

FACES.parquet: a face table (PNG images, RGB). EXPECTED: a features.parquet (its first
`features` values per row are the face's FC1) or a .json with a "face" list of rows.
The input is made here from the model card alone, as a deployment would: the face's pixels,
its colour planes in the card's order, (x - 127.5) / 128 — or, with --preprocess, the uint8
RGB pixels as they are. Prints one line: the largest relative difference and the batches run.
"""
import argparse, io, json
import numpy as np, onnx, onnxruntime as ort, pyarrow.parquet as pq
from PIL import Image

a = argparse.ArgumentParser()
a.add_argument("model"); a.add_argument("card"); a.add_argument("faces"); a.add_argument("expected")
a.add_argument("--preprocess", action="store_true"); a.add_argument("--faces-max", type=int, default=64)
a = a.parse_args()

onnx.checker.check_model(a.model, full_check=True)
card = json.load(open(a.card))
h, w = card["net"]["input"]
feat = card["net"]["features"]
t = pq.read_table(a.faces)
rows = min(t.num_rows, a.faces_max)
rgb = np.stack([np.asarray(Image.open(io.BytesIO(b)).convert("RGB")) for b in t.column("image").to_pylist()[:rows]])
if card["patch"]:
    # A patch model's input is its box of the aligned face resized (bilinear, OpenCV's pixel
    # centres) to the input size, as extract does; this check feeds whole faces only.
    raise SystemExit("patch models are not checked here: their input is a resized box of the face")
assert rgb.shape[1:] == (h, w, 3), (rgb.shape, h, w)

if a.expected.endswith(".json"):
    want = np.asarray(json.load(open(a.expected))["face"], dtype=np.float64)[:rows]
else:
    f = pq.read_table(a.expected)
    by_source = dict(zip(f.column("source").to_pylist(), f.column("feature").to_pylist()))
    want = np.asarray([by_source[s][:feat] for s in t.column("source").to_pylist()[:rows]], dtype=np.float64)

if a.preprocess:
    x = rgb.astype(np.uint8)
else:
    planes = rgb[..., ::-1] if card["channels"] == "bgr" else rgb
    x = ((planes.astype(np.float32) - 127.5) / 128.0).transpose(0, 3, 1, 2).copy()

sess = ort.InferenceSession(a.model, providers=["CPUExecutionProvider"])
name = sess.get_inputs()[0].name
dims = sess.get_inputs()[0].shape
batches = [rows] if isinstance(dims[0], int) else [rows, 1, 37]
if isinstance(dims[0], int):
    batches = [dims[0]]
got = np.concatenate([sess.run(None, {name: x[i:i + batches[0]]})[0] for i in range(0, rows - rows % batches[0], batches[0])])
n = len(got)
scale = np.abs(want[:n]).max(axis=1, keepdims=True)
gap = float((np.abs(got.astype(np.float64) - want[:n]) / scale).max())
ran = [len(got)]
for b in batches[1:]:
    reps = (b + rows - 1) // rows
    xb = np.concatenate([x] * reps)[:b]
    out = sess.run(None, {name: xb})[0]
    assert out.shape == (b, feat), (out.shape, b)
    assert np.allclose(out[:min(b, rows)], got[:min(b, rows)], rtol=1e-4, atol=1e-5 * float(scale.max()))
    ran.append(b)
meta = {p.key: p.value for p in onnx.load(a.model, load_external_data=False).metadata_props}
print(json.dumps({"gap": gap, "faces": n, "batches": ran, "input": name, "metadata": sorted(meta)}))
