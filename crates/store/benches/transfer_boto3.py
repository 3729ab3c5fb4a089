"""The peer of `benches/transfer.rs`: boto3's managed transfer (`upload_file` / `download_file`,
multipart, its default TransferConfig) of one large file to and from the same S3 server, with
the process's peak resident set. Run one right after the other with the Rust bench.

    AWS_ENDPOINT_URL=http://127.0.0.1:PORT AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=x \
        python transfer_boto3.py BUCKET GIB [DIR]
"""
import os
import resource
import sys
import tempfile
import time

import boto3


def peak_rss_mb():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def main():
    bucket, gib = sys.argv[1], float(sys.argv[2])
    where = sys.argv[3] if len(sys.argv) > 3 else "."
    n = int(gib * (1 << 30))
    s3 = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    with tempfile.TemporaryDirectory(dir=where) as d:
        src, dst = os.path.join(d, "up.bin"), os.path.join(d, "down.bin")
        with open(src, "wb") as f:
            left = n
            block = os.urandom(16 << 20)
            while left:
                k = min(left, len(block))
                f.write(block[:k])
                left -= k
        print(f"file: {gib:.2f} GiB; peak RSS after writing it: {peak_rss_mb():.0f} MB")
        key = f"boto3-bench/{os.getpid()}"
        t = time.time()
        s3.upload_file(src, bucket, key)
        up = time.time() - t
        print(f"upload_file   {up:.1f} s, {n / up / 1e6:.0f} MB/s, peak RSS {peak_rss_mb():.0f} MB")
        os.remove(src)
        t = time.time()
        s3.download_file(bucket, key, dst)
        down = time.time() - t
        print(f"download_file {down:.1f} s, {n / down / 1e6:.0f} MB/s, peak RSS {peak_rss_mb():.0f} MB")


if __name__ == "__main__":
    main()
