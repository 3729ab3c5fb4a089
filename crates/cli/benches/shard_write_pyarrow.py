"""Peer of the face_data bench's shard write: pyarrow writes the very same rows, read back from
the shard file the bench leaves behind, as one zstd Parquet file (row groups of 1,024, like the
bench); median of 5 writes, the table already in memory.

Run right after the bench, with nothing else running:
  KEEP_SHARD=/tmp/shard.parquet cargo bench -p spherepipe-cli --bench face_data
  /tmp/peers-venv/bin/python crates/cli/benches/shard_write_pyarrow.py /tmp/shard.parquet
"""
import os, statistics, sys, tempfile, time
import pyarrow.compute as pc, pyarrow.parquet as pq

# One contiguous chunk per column, however the file was paged, as a table built in memory is.
table = pq.read_table(sys.argv[1]).combine_chunks()
png = pc.sum(pc.binary_length(table.column("image"))).as_py()
out = os.path.join(tempfile.mkdtemp(), "s.parquet")
times = []
for _ in range(5):
    t = time.perf_counter()
    pq.write_table(table, out, compression="zstd", row_group_size=1024)
    times.append(time.perf_counter() - t)
m, size = statistics.median(times), os.path.getsize(out)
print(f"pyarrow shard write: {table.num_rows} rows, {png / 1e6:.1f} MB of PNG in, {size / 1e6:.1f} MB file, "
      f"median {m:.3f}s = {size / 1e6 / m:.0f} MB/s written ({png / 1e6 / m:.0f} MB/s of input)")
