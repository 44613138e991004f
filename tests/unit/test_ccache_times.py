"""tools/ccache_times.py on log lines in ccache 4.7's format (copied from the CUDA build check's log)."""

from datetime import datetime

from ccache_times import parse, summary

LOG = """\
[2026-12-03T19:54:03.848227 3840 ] === CCACHE 4.7.5 STARTED =========================================
[2026-12-03T19:54:03.848300 3840 ] Config: (default) absolute_paths_in_stderr = false
[2026-12-03T19:54:03.849735 3840 ] Compiler type: nvcc
[2026-12-03T19:54:03.850367 3840 ] Source file: ../../../../src/vendor/llama.cpp/ggml/src/ggml-cuda/arange.cu
[2026-12-03T19:54:04.000000 3841 ] === CCACHE 4.7.5 STARTED =========================================
[2026-12-03T19:54:04.100000 3841 ] Compiler type: gcc
[2026-12-03T19:54:04.200000 3841 ] Source file: ../src/llama.cpp
[2026-12-03T19:54:05.200000 3841 ] Result: direct_cache_hit
[2026-12-03T19:54:05.200001 3841 ] Result: cache_hit
[2026-12-03T19:54:33.850367 3840 ] Result: cache_miss
[2026-12-03T19:54:33.850368 3840 ] Result: local_storage_write
a line cut off by a full disk [2026-12-03T19:54:34
[2026-12-03T19:54:40.000000 3840 ] === CCACHE 4.7.5 STARTED =========================================
[2026-12-03T19:54:40.100000 3840 ] Command line: /usr/bin/c++ -o llama-server main.o -lcuda
[2026-12-03T19:55:00.000000 3840 ] === CCACHE 4.7.5 STARTED =========================================
[2026-12-03T19:55:00.100000 3840 ] Source file: ../ggml-cuda/template-instances/fattn-vec-instance-q5_0-q5_0.cu
[2026-12-03T19:55:10.100000 3840 ] Result: cache_miss
"""


def test_each_compile_lasts_from_its_start_to_its_pids_last_line_and_a_reused_pid_starts_anew():
    compiles = parse(LOG.splitlines())
    assert [(c.source.rsplit("/", 1)[-1], c.hit, round(c.seconds, 3)) for c in compiles] == [
        ("arange.cu", False, 30.002),
        ("llama.cpp", True, 1.2),
        ("fattn-vec-instance-q5_0-q5_0.cu", False, 10.1),
    ]
    assert [c.cuda for c in compiles] == [True, False, True]  # by the compiler's type or the .cu name


def test_the_summary_counts_and_sums_by_kind_and_since_drops_earlier_compiles():
    table = summary(parse(LOG.splitlines()))
    assert {kind: (row["count"], round(row["seconds"], 3)) for kind, row in table.items()} == {
        "cuda miss": (2, 40.102),
        "c/c++ hit": (1, 1.2),
    }
    later = parse(LOG.splitlines(), since=datetime.fromisoformat("2026-12-03T19:54:50"))
    assert [c.source.endswith("q5_0-q5_0.cu") for c in later] == [True]
