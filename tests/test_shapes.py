"""Shape buckets: few distinct padded lengths, never shorter than the sequence."""

from orchestra.shapes import bucket_length


def test_buckets_by_hand():
  assert [bucket_length(n) for n in (1, 64, 65, 500, 512)] == [64, 64, 128, 512, 512]
  assert [bucket_length(n) for n in (513, 768, 769, 1024, 1025, 1536, 1537, 3000, 5000)] == [
      768, 768, 1024, 1024, 1536, 1536, 2048, 3072, 6144]
  assert bucket_length(100, multiple=16) == 112


def test_buckets_cover_and_stay_few():
  lengths = range(1, 8193)
  buckets = {bucket_length(n) for n in lengths}
  assert all(bucket_length(n) >= n for n in lengths)
  assert all(bucket_length(n) <= 1.5 * n + 64 for n in lengths)
  assert len(buckets) == 8 + 2 * 4            # 64..512, then 768, 1024, ..., 6144, 8192
