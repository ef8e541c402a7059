"""Parquet and saved-HF-dataset readers: rows in batches of BATCH_ROWS, one row group at a time.

A corrupt row group costs only its own rows: one Bad at its first row not read, standing for all
the rows it lost (from the footer). A file without the text column is one Bad for all its rows; a
file without a readable footer is one Bad for all its bytes (its row count is unknown).
"""

from __future__ import annotations

from pipeline import storage
from pipeline.readers.records import Bad, error_line, make_record
from pipeline.readers.source import fatal, input_size, open_input

BATCH_ROWS = 1024  # rows per Parquet/HF batch


def _n_rows(n: int) -> str:
    return f"{n} row" if n == 1 else f"{n} rows"


def _rows(path, table, start, opts, extra=None):
    for i, row in enumerate(table.to_pylist()):
        yield make_record(path, start + i, row, None, *opts, convert=True, extra=extra)


def _no_text_column(path, names, text_field, rows):
    """A Bad for all `rows` rows of a table without the text column (None if it has one)."""
    if text_field in names:
        return None
    return Bad(0, b"", error_line(path, 0, f"no text column '{text_field}' (columns: {', '.join(names) or 'none'}; "
                                           f"{_n_rows(rows)} not read); set `text_field:` for this input"), rows=rows)


def _read_batches(path, batches, start, total, opts, what, src=None, extra=None):
    """Rows of `batches` (`total` rows, numbered from `start`); a read failure becomes one Bad at
    the first row not read that stands for all rows not read (`total` less those yielded)."""
    done = 0
    try:
        for batch in batches:
            for item in _rows(path, batch, start + done, opts, extra):
                yield item
                done += 1
    except Exception as e:
        fatal(e, src)  # the file's own IO error propagates: the task is retried
        lost, pos = max(total - done, 0), start + done
        after = f" after row {pos - 1}" if done else ""
        yield Bad(pos, b"", error_line(path, pos, f"corrupt or unreadable {what}{after}: {_n_rows(lost)} not read "
                                                  f"({type(e).__name__}: {e}); re-export the file or remove it"), rows=lost)


def read_parquet(path, *opts):
    with open_input(path) as src:  # pyarrow reads the footer and row groups by seek + read through `src`
        yield from _read_parquet_file(path, src, *opts)


def _read_parquet_file(path, src, *opts):
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(src)
        names, sizes = pf.schema_arrow.names, [pf.metadata.row_group(k).num_rows for k in range(pf.num_row_groups)]
    except Exception as e:
        fatal(e, src)
        size = input_size(path)  # no footer: the row count is unknown, the whole file is lost
        yield Bad(0, b"", error_line(path, 0, f"corrupt or unreadable Parquet file ({type(e).__name__}: {e}); "
                                              "re-export the file or remove it"), offset=0, length=size)
        return
    if bad := _no_text_column(path, names, opts[0], sum(sizes)):
        yield bad
        return
    start = 0  # one row group at a time: a corrupt group costs only its own rows
    for k, n in enumerate(sizes):
        batches = pf.iter_batches(batch_size=BATCH_ROWS, row_groups=[k])
        yield from _read_batches(path, batches, start, n, opts, f"Parquet row group {k} (rows {start}-{start + n - 1})", src)
        start += n


def read_hf(path, *opts):
    try:
        import datasets

        ds = datasets.load_from_disk(path)
        splits = sorted(ds.items()) if isinstance(ds, datasets.DatasetDict) else [(None, ds)]
    except Exception as e:
        fatal(e)
        yield Bad(0, b"", error_line(path, 0, f"cannot load saved HF dataset ({type(e).__name__}: {e}); "
                                              "re-save it with datasets.save_to_disk"))
        return
    for split, d in splits:
        where = storage.join(path, split) if split else path
        if bad := _no_text_column(where, d.column_names, opts[0], d.num_rows):
            yield bad
            continue
        batches = d.with_format("arrow").iter(batch_size=BATCH_ROWS)
        yield from _read_batches(where, batches, 0, d.num_rows, opts, "HF dataset",
                                 extra={"split": split} if split else None)
