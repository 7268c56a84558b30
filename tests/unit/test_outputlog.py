"""outputlog: the job's output log, written by one shim and read by many readers."""

from __future__ import annotations

import fcntl
import os
import struct
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import pytest

from jobworker.isolation.errors import OutputLogError
from jobworker.isolation.outputlog import (
    MAGIC,
    MAX_RECORD,
    READ_AHEAD,
    Kind,
    OutputLogReader,
    OutputLogWriter,
    Record,
    Stream,
)

OUT, ERR = Stream.STDOUT, Stream.STDERR


@pytest.fixture
def log(tmp_path: Path) -> Path:
    return tmp_path / "output.log"


@pytest.fixture
def reader_of(log: Path) -> Iterator[Callable[[], OutputLogReader]]:
    """Open readers on ``log`` and close them all at the end of the test."""
    opened: list[OutputLogReader] = []

    def open_reader() -> OutputLogReader:
        reader = OutputLogReader(log)
        opened.append(reader)
        return reader

    yield open_reader
    for reader in opened:
        reader.close()


def write_log(
    path: Path, chunks: Sequence[tuple[Stream, bytes | memoryview]], cap: int | None = None
) -> None:
    writer = OutputLogWriter(path, cap)
    for stream, data in chunks:
        writer.write(stream, data)
    writer.close()


def read_all(path: Path) -> list[Record]:
    with OutputLogReader(path) as reader:
        return list(reader.records())


def record(kind: int, stream: int, payload: bytes) -> bytes:
    """One record in the documented format: kind, stream, 2 pad bytes, u32 LE length."""
    return bytes([kind, stream, 0, 0]) + struct.pack("<I", len(payload)) + payload


def data(stream: Stream, offset: int, payload: bytes) -> Record:
    return Record(Kind.DATA, stream, offset, payload)


def capped(offset: int, cap: int) -> Record:
    return Record(Kind.CAPPED, None, offset, str(cap).encode())


def end(offset: int, dropped: int = 0) -> Record:
    return Record(Kind.END, None, offset, str(dropped).encode())


# --- format and round trip -------------------------------------------------------


def test_file_format(log):
    write_log(log, [(OUT, b"abc"), (ERR, b"de")])
    assert log.read_bytes() == (
        MAGIC + record(1, 1, b"abc") + record(1, 2, b"de") + record(3, 0, b"0")
    )


def test_round_trip_keeps_the_interleaving(log):
    chunks = [(OUT, b"one\n"), (ERR, b"oops\n"), (OUT, b"two\n"), (OUT, b"3"), (ERR, b"!")]
    write_log(log, chunks)
    assert read_all(log) == [
        data(OUT, 0, b"one\n"),
        data(ERR, 4, b"oops\n"),
        data(OUT, 9, b"two\n"),
        data(OUT, 13, b"3"),
        data(ERR, 14, b"!"),
        end(15),
    ]


def test_reader_offset_counts_output_bytes(log, reader_of):
    write_log(log, [(OUT, b"x" * 1000), (ERR, b"y" * 24)])
    reader = reader_of()
    assert reader.offset == 0
    records = list(reader.records())
    assert [r.offset for r in records] == [0, 1000, 1024]
    assert reader.offset == 1024
    assert records[-1].kind is Kind.END
    assert records[-1].number == 0


def test_binary_and_memoryview_payloads(log):
    payload = bytes(range(256)) * 4
    write_log(log, [(OUT, memoryview(payload)[10:20]), (ERR, payload)])
    records = read_all(log)
    assert records[0] == data(OUT, 0, payload[10:20])
    assert records[1] == data(ERR, 10, payload)


def test_empty_log(log):
    write_log(log, [])
    assert read_all(log) == [end(0)]


def test_writer_never_overwrites(log):
    log.write_bytes(b"precious")
    with pytest.raises(FileExistsError):
        OutputLogWriter(log, None)
    assert log.read_bytes() == b"precious"


def test_writes_larger_than_a_record_stay_readable(log):
    big = b"z" * (MAX_RECORD + 1)
    write_log(log, [(OUT, big)])
    records = read_all(log)
    assert b"".join(r.data for r in records if r.kind is Kind.DATA) == big


# --- reading while the log grows --------------------------------------------------


def test_reader_follows_a_growing_log(log, reader_of):
    writer = OutputLogWriter(log, None)
    reader = reader_of()
    assert list(reader.records()) == []
    writer.write(OUT, b"first")
    assert list(reader.records()) == [data(OUT, 0, b"first")]
    assert list(reader.records()) == []  # nothing is repeated
    writer.write(ERR, b"second")
    writer.write(OUT, b"third")
    assert list(reader.records()) == [data(ERR, 5, b"second"), data(OUT, 11, b"third")]
    writer.close()
    assert list(reader.records()) == [end(16)]
    assert list(reader.records()) == []


def test_reader_opened_before_the_magic_is_written(log, reader_of):
    log.write_bytes(b"")
    empty = reader_of()
    log.write_bytes(MAGIC[:3])
    partial = reader_of()
    assert list(empty.records()) == list(partial.records()) == []
    log.write_bytes(MAGIC + record(1, 1, b"hi"))
    assert list(empty.records()) == list(partial.records()) == [data(OUT, 0, b"hi")]


def test_torn_tail_is_invisible_until_complete(log, reader_of):
    first = record(1, 1, b"complete")
    second = record(1, 2, b"torn-record-payload")
    for cut in range(len(second)):
        log.unlink(missing_ok=True)
        log.write_bytes(MAGIC + first + second[:cut])
        reader = reader_of()
        assert list(reader.records()) == [data(OUT, 0, b"complete")], cut
        assert list(reader.records()) == [], cut
        with log.open("ab") as f:
            f.write(second[cut:])
        assert list(reader.records()) == [data(ERR, 8, b"torn-record-payload")], cut


def test_torn_marker_is_invisible_until_complete(log, reader_of):
    whole = MAGIC + record(1, 1, b"abc") + record(3, 0, b"12")
    log.write_bytes(whole[:-1])
    reader = reader_of()
    assert list(reader.records()) == [data(OUT, 0, b"abc")]
    log.write_bytes(whole)
    assert list(reader.records()) == [end(3, 12)]


def test_concurrent_writer_and_reader(log, reader_of):
    # A thread writes while this one reads; whatever the interleaving, the reader
    # sees exactly the written bytes, in order, each record once.
    chunks = [
        (OUT if i % 3 else ERR, bytes([65 + i % 26]) * (1 + i * 37 % 5000)) for i in range(400)
    ]
    writer = OutputLogWriter(log, None)

    def produce() -> None:
        for stream, chunk in chunks:
            writer.write(stream, chunk)
        writer.close()

    thread = threading.Thread(target=produce)
    reader = reader_of()
    seen: list[Record] = []
    thread.start()
    try:
        while not (seen and seen[-1].kind is Kind.END):
            alive = thread.is_alive()
            new = list(reader.records())
            seen.extend(new)
            if not alive and not new:
                break  # the writer is gone: nothing more will come
    finally:
        thread.join()
    total = sum(len(chunk) for _, chunk in chunks)
    assert seen[-1] == end(total)
    assert [(r.stream, r.data) for r in seen[:-1]] == chunks
    offsets = [r.offset for r in seen[:-1]]
    expected_offsets = [sum(len(c) for _, c in chunks[:i]) for i in range(len(chunks))]
    assert offsets == expected_offsets


# --- skip_to -------------------------------------------------------------------------


@pytest.fixture
def hello_world(log: Path) -> Path:
    write_log(log, [(OUT, b"hello"), (ERR, b"world")])
    return log


def test_skip_to_zero_is_a_no_op(hello_world, reader_of):
    reader = reader_of()
    reader.skip_to(0)
    assert list(reader.records()) == read_all(hello_world)


def test_skip_into_the_middle_of_a_record(hello_world, reader_of):
    reader = reader_of()
    reader.skip_to(3)
    assert list(reader.records()) == [data(OUT, 3, b"lo"), data(ERR, 5, b"world"), end(10)]


def test_skip_to_the_last_byte_of_a_record(hello_world, reader_of):
    reader = reader_of()
    reader.skip_to(9)
    assert list(reader.records()) == [data(ERR, 9, b"d"), end(10)]


def test_skip_twice_within_one_record(hello_world, reader_of):
    reader = reader_of()
    reader.skip_to(1)
    reader.skip_to(4)
    assert list(reader.records()) == [data(OUT, 4, b"o"), data(ERR, 5, b"world"), end(10)]


def test_skip_to_a_record_boundary(hello_world, reader_of):
    reader = reader_of()
    reader.skip_to(5)
    assert reader.offset == 5
    assert list(reader.records()) == [data(ERR, 5, b"world"), end(10)]


def test_skip_to_the_end_stops_at_the_end_marker(hello_world, reader_of):
    for target in (10, 11, 10**12):
        reader = reader_of()
        reader.skip_to(target)
        assert reader.offset == 10
        assert list(reader.records()) == [end(10)]


def test_skip_past_the_cap_stops_at_the_capped_marker(log, reader_of):
    write_log(log, [(OUT, b"hello"), (ERR, b"world"), (OUT, b"more")], cap=7)
    reader = reader_of()
    reader.skip_to(100)
    assert reader.offset == 7
    assert list(reader.records()) == [capped(7, 7), end(7, 3 + 4)]


def test_skip_past_the_markers_after_reading_them(log, reader_of):
    write_log(log, [(OUT, b"hello world")], cap=5)
    reader = reader_of()
    reader.skip_to(3)
    assert list(reader.records()) == [data(OUT, 3, b"lo"), capped(5, 5), end(5, 6)]
    reader.skip_to(100)
    assert list(reader.records()) == []


def test_skip_to_reads_headers_only(log, reader_of):
    # Skipping over a record must not need its payload: a reader may skip over
    # data that has not fully reached the file yet.
    log.write_bytes(MAGIC + record(1, 1, b"abcdef")[:10])
    reader = reader_of()
    reader.skip_to(6)
    assert reader.offset == 6
    with log.open("ab") as f:
        f.write(b"cdef" + record(1, 2, b"next"))
    assert list(reader.records()) == [data(ERR, 6, b"next")]


def test_skip_beyond_a_growing_log_stops_at_its_written_end(log, reader_of):
    writer = OutputLogWriter(log, None)
    writer.write(OUT, b"hello")
    reader = reader_of()
    reader.skip_to(8)
    assert reader.offset == 5
    writer.write(ERR, b"world")
    reader.skip_to(8)
    assert list(reader.records()) == [data(ERR, 8, b"ld")]
    writer.close()
    assert list(reader.records()) == [end(10)]


# --- merging consecutive records ----------------------------------------------------


def merged_by_hand(records: Sequence[Record], limit: int) -> list[Record]:
    """The rule of ``records(merge=limit)``, applied to records read one by one.

    Consecutive DATA records of one stream join while they total at most ``limit``,
    and only records smaller than READ_AHEAD join at all: a larger one comes alone.
    """
    result: list[Record] = []
    open_to_more = False  # whether the last one began with a small DATA record
    for r in records:
        small = r.kind is Kind.DATA and len(r.data) < READ_AHEAD
        last = result[-1] if result else None
        if (
            open_to_more
            and small
            and last is not None
            and last.stream is r.stream
            and len(last.data) + len(r.data) <= limit
        ):
            result[-1] = data(r.stream, last.offset, last.data + r.data)  # type: ignore[arg-type]
        else:
            result.append(r)
            open_to_more = small
    return result


def test_merge_joins_consecutive_data_of_one_stream_only(log, reader_of):
    write_log(log, [(OUT, b"a"), (OUT, b"b"), (ERR, b"c"), (OUT, b"d"), (OUT, b"e")])
    assert list(reader_of().records(merge=100)) == [
        data(OUT, 0, b"ab"),
        data(ERR, 2, b"c"),
        data(OUT, 3, b"de"),
        end(5),
    ]


def test_merge_is_bounded_but_a_larger_record_still_comes_whole(log, reader_of):
    write_log(log, [(OUT, b"123456"), (OUT, b"789abc"), (OUT, b"def"), (OUT, b"x" * 20)])
    assert list(reader_of().records(merge=12)) == [
        data(OUT, 0, b"123456789abc"),
        data(OUT, 12, b"def"),
        data(OUT, 15, b"x" * 20),
        end(35),
    ]


def test_a_record_of_read_ahead_size_or_more_comes_alone(log, reader_of):
    big = b"B" * READ_AHEAD
    write_log(log, [(OUT, b"a"), (OUT, big), (OUT, b"b"), (OUT, b"c")])
    assert list(reader_of().records(merge=MAX_RECORD)) == [
        data(OUT, 0, b"a"),
        data(OUT, 1, big),
        data(OUT, 1 + len(big), b"bc"),
        end(len(big) + 3),
    ]


def test_merge_never_crosses_a_marker(log, reader_of):
    write_log(log, [(OUT, b"1234"), (OUT, b"5678"), (OUT, b"abcd")], cap=10)
    assert list(reader_of().records(merge=100)) == [
        data(OUT, 0, b"12345678ab"),
        capped(10, 10),
        end(10, 2),
    ]


def test_merge_after_skipping_into_a_record(log, reader_of):
    write_log(log, [(OUT, b"hello"), (OUT, b"world")])
    reader = reader_of()
    reader.skip_to(3)
    assert list(reader.records(merge=100)) == [data(OUT, 3, b"loworld"), end(10)]


def test_merge_stops_at_a_torn_record_and_takes_it_once_complete(log, reader_of):
    second = record(1, 1, b"def")
    for cut in range(len(second)):
        log.unlink(missing_ok=True)
        log.write_bytes(MAGIC + record(1, 1, b"abc") + second[:cut])
        reader = reader_of()
        assert list(reader.records(merge=100)) == [data(OUT, 0, b"abc")], cut
        with log.open("ab") as f:
            f.write(second[cut:] + record(1, 1, b"ghi"))
        assert list(reader.records(merge=100)) == [data(OUT, 3, b"defghi")], cut


def test_merge_hands_out_what_precedes_a_damaged_header_first(log, reader_of):
    log.write_bytes(MAGIC + record(1, 1, b"good") + record(1, 1, b"also") + b"\xff" * 8)
    records = reader_of().records(merge=100)
    assert next(records) == data(OUT, 0, b"goodalso")
    with pytest.raises(OutputLogError, match=f"damaged output log at byte {len(MAGIC) + 24}"):
        next(records)


@pytest.mark.parametrize("limit", [1, 700, 64 * 1024, MAX_RECORD])
def test_merged_reading_is_reading_one_by_one_then_joining(log, reader_of, limit):
    # Many small records in runs of each stream, with a few large ones: more than the
    # reader reads ahead at once, and payloads on both sides of that size.
    chunks: list[tuple[Stream, bytes]] = []
    for i in range(3000):
        stream = OUT if (i // 7) % 3 else ERR
        size = 200_000 if i % 500 == 499 else 1 + (i * 53) % 900
        chunks.append((stream, bytes([i % 251]) * size))
    write_log(log, chunks)
    one_by_one = list(reader_of().records())
    assert list(reader_of().records(merge=limit)) == merged_by_hand(one_by_one, limit)


def test_merged_reading_of_a_log_being_written(log, reader_of):
    chunks = [
        (OUT if i % 5 else ERR, bytes([65 + i % 26]) * (1 + i * 37 % 5000)) for i in range(400)
    ]
    writer = OutputLogWriter(log, None)

    def produce() -> None:
        for stream, chunk in chunks:
            writer.write(stream, chunk)
        writer.close()

    thread = threading.Thread(target=produce)
    reader = reader_of()
    seen: list[Record] = []
    thread.start()
    try:
        while not (seen and seen[-1].kind is Kind.END):
            alive = thread.is_alive()
            new = list(reader.records(merge=8192))
            seen.extend(new)
            if not alive and not new:
                break
    finally:
        thread.join()
    assert seen[-1] == end(sum(len(chunk) for _, chunk in chunks))
    pieces = seen[:-1]
    assert all(len(r.data) <= 8192 for r in pieces)  # every write is smaller than that
    written = [data(st, sum(len(c) for _, c in chunks[:i]), c) for i, (st, c) in enumerate(chunks)]
    # However the writes were cut into pieces, they join up to the same streams and offsets.
    assert merged_by_hand(pieces, 1 << 62) == merged_by_hand(written, 1 << 62)


# --- the output cap ----------------------------------------------------------------


def test_output_exactly_at_the_cap_is_not_capped(log):
    writer = OutputLogWriter(log, 10)
    writer.write(OUT, b"1234")
    writer.write(ERR, b"567890")
    assert writer.dropped == 0
    writer.close()
    assert read_all(log) == [data(OUT, 0, b"1234"), data(ERR, 4, b"567890"), end(10)]


def test_output_past_the_cap_is_cut_marked_once_and_counted(log):
    writer = OutputLogWriter(log, 10)
    writer.write(OUT, b"1234")
    writer.write(ERR, b"56789abc")  # crosses the cap: 6 kept, 2 dropped
    assert writer.dropped > 0
    writer.write(OUT, b"defgh")  # all 5 dropped
    assert move(writer, OUT, b"z" * 100)  # discarded in the kernel, never read here
    assert (writer.written, writer.dropped) == (10, 107)
    writer.close()
    records = read_all(log)
    assert records == [
        data(OUT, 0, b"1234"),
        data(ERR, 4, b"56789a"),
        capped(10, 10),
        end(10, 107),
    ]
    assert records[2].number == 10
    assert records[3].number == 107


def test_write_that_exactly_fills_then_overflows(log):
    writer = OutputLogWriter(log, 4)
    writer.write(OUT, b"abcd")
    assert writer.dropped == 0
    writer.write(OUT, b"e")
    writer.write(OUT, b"f")
    writer.close()
    assert read_all(log) == [data(OUT, 0, b"abcd"), capped(4, 4), end(4, 2)]


def test_zero_cap_keeps_nothing(log):
    write_log(log, [(OUT, b"a"), (ERR, b"bc")], cap=0)
    assert read_all(log) == [capped(0, 0), end(0, 3)]


def test_no_cap(log):
    writer = OutputLogWriter(log, None)
    for _ in range(50):
        writer.write(OUT, b"x" * 10_000)
    assert writer.dropped == 0
    writer.close()
    assert read_all(log)[-1] == end(500_000)


# --- moving output straight from a pipe (what the shim does) ------------------------


def move(writer: OutputLogWriter, stream: Stream, payload: bytes) -> bool:
    """Put ``payload`` in a pipe, as a job would, and have the writer take it from there."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, 1 << 20)
        os.write(write_end, payload)
        return writer.move_from(stream, read_end)
    finally:
        os.close(read_end)
        os.close(write_end)


def test_moved_output_is_recorded_like_written_output(log):
    writer = OutputLogWriter(log, None)
    assert move(writer, OUT, b"from the pipe\n")
    writer.write(ERR, b"written\n")
    assert move(writer, OUT, b"again")
    writer.close()
    assert read_all(log) == [
        data(OUT, 0, b"from the pipe\n"),
        data(ERR, 14, b"written\n"),
        data(OUT, 22, b"again"),
        end(27),
    ]


def test_moves_from_a_busy_pipe_keep_every_byte_in_bounded_records(log):
    writer = OutputLogWriter(log, None)
    payload = bytes(range(256)) * (3 * MAX_RECORD // 256)  # three full pipes' worth
    read_end, write_end = os.pipe()

    def job() -> None:
        with os.fdopen(write_end, "wb") as out:
            for start in range(0, len(payload), 8192):
                out.write(payload[start : start + 8192])

    thread = threading.Thread(target=job)
    thread.start()
    moves = 0
    while writer.move_from(OUT, read_end):  # blocks in poll's place: the pipe is readable
        moves += 1
    thread.join()
    os.close(read_end)
    writer.close()
    records = read_all(log)
    assert records[-1] == end(len(payload))
    assert len(records) - 1 == moves
    assert all(0 < len(r.data) <= MAX_RECORD for r in records[:-1])
    assert b"".join(r.data for r in records[:-1]) == payload


def test_a_move_across_the_cap_keeps_what_fits_and_drops_the_rest(log):
    writer = OutputLogWriter(log, 10)
    writer.write(OUT, b"1234")
    assert move(writer, ERR, b"56789abc")
    assert move(writer, OUT, b"defgh")
    writer.close()
    assert read_all(log) == [
        data(OUT, 0, b"1234"),
        data(ERR, 4, b"56789a"),
        capped(10, 10),
        end(10, 7),
    ]


# --- files that are not (intact) logs ----------------------------------------------


@pytest.mark.parametrize("content", [b"hello world\n", b"X", MAGIC[:-1] + b"\x01", b"\0" * 64])
def test_not_an_output_log(log, content):
    log.write_bytes(content)
    with pytest.raises(OutputLogError, match="not a jobworker output log"):
        OutputLogReader(log)


def test_not_an_output_log_leaks_no_descriptor(log):
    log.write_bytes(b"not a log at all")
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(10):
        with pytest.raises(OutputLogError):
            OutputLogReader(log)
    assert len(os.listdir("/proc/self/fd")) == before


@pytest.mark.parametrize(
    "header",
    [
        bytes([9, 1, 0, 0]) + struct.pack("<I", 1),  # unknown kind
        bytes([0, 1, 0, 0]) + struct.pack("<I", 1),  # kind 0
        bytes([1, 3, 0, 0]) + struct.pack("<I", 1),  # unknown stream
        bytes([1, 1, 0, 0]) + struct.pack("<I", MAX_RECORD + 1),  # longer than any record
        b"\xff" * 8,
    ],
)
def test_damaged_header(log, reader_of, header):
    log.write_bytes(MAGIC + record(1, 1, b"good") + header + b"x")
    reader = reader_of()
    records = reader.records()
    assert next(records) == data(OUT, 0, b"good")
    with pytest.raises(OutputLogError, match=f"damaged output log at byte {len(MAGIC) + 12}"):
        next(records)
    skipper = reader_of()
    with pytest.raises(OutputLogError, match="damaged"):
        skipper.skip_to(100)
