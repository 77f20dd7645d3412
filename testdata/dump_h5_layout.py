"""Print the HDF5 layout of one or more files: every node with its PyTables
class, shape, dtype, user attributes (and a few PyTables system attributes),
table column descriptions and (a few) rows, and small array contents.

Usage:  python dump_h5_layout.py FILE [FILE ...] [--rows N] [--max-values N] [--skip GLOB]

Only needs PyTables + numpy (works in any env that has them).
"""

import argparse
import fnmatch
import sys

import numpy as np
import tables

SYSTEM_ATTRS_SHOWN = ("CLASS", "FLAVOR", "TITLE", "VERSION", "PYTABLES_FORMAT_VERSION")


def short(v, maxlen=200):
    if isinstance(v, np.ndarray):
        s = "ndarray(dtype=%s, shape=%s) %s" % (v.dtype, v.shape, np.array2string(v, threshold=20).replace("\n", " "))
    elif isinstance(v, np.generic):
        s = "%s(%r)" % (type(v).__name__, v.item())
    else:
        s = "%s(%r)" % (type(v).__name__, v)
    if len(s) > maxlen:
        s = s[: maxlen - 3] + "..."
    return s


def dump_attrs(node, indent, out):
    attrs = node._v_attrs
    user = attrs._v_attrnamesuser
    sysn = [n for n in attrs._v_attrnamessys if n in SYSTEM_ATTRS_SHOWN]
    if sysn:
        out.append(indent + "sysattrs: " + ", ".join("%s=%r" % (n, _dec(attrs[n])) for n in sysn))
    for n in user:
        out.append(indent + "@%s = %s" % (n, short(attrs[n])))


def _dec(v):
    if isinstance(v, bytes):
        return v.decode("utf8", "replace")
    if isinstance(v, np.generic):
        return v.item()
    return v


def dump_file(path, rows, max_values, out):
    out.append("=" * 78)
    out.append("FILE %s" % path)
    out.append("=" * 78)
    with tables.open_file(path, "r") as h5:
        out.append("root attrs:")
        dump_attrs(h5.root, "    ", out)
        _dump_group(h5.root, rows, max_values, out)
    out.append("")


def _children_sorted(group):
    # groups and leaves interleaved, alphabetically (run_XXXXXXXX sorts by index)
    return [group._v_children[k] for k in sorted(group._v_children)]


SKIP = []  # fnmatch patterns of group paths whose subtree is summarised, not dumped


def _dump_group(group, rows, max_values, out):
    for node in _children_sorted(group):
        _dump_node(node, rows, max_values, out)
        if isinstance(node, tables.Group):
            if any(fnmatch.fnmatchcase(node._v_pathname, p) for p in SKIP):
                n = sum(1 for _ in node._v_file.walk_nodes(node)) - 1
                ind = "  " * node._v_pathname.count("/")
                out.append("%s... subtree skipped (%d nodes below; see the basic file for the full dump)" % (ind, n))
                continue
            _dump_group(node, rows, max_values, out)


def _dump_node(node, rows, max_values, out):
    depth = node._v_pathname.count("/")
    ind = "  " * (depth - 1)
    cls = type(node).__name__
    if isinstance(node, tables.Group):
        out.append("%s%s  [Group]" % (ind, node._v_pathname))
        dump_attrs(node, ind + "    ", out)
        return
    shape = getattr(node, "shape", None)
    dtype = getattr(node, "dtype", None)
    extra = ""
    filt = getattr(node, "filters", None)
    if filt is not None and filt.complevel:
        extra = " filters=%s:%d" % (filt.complib, filt.complevel)
    chunk = getattr(node, "chunkshape", None)
    if chunk is not None:
        extra += " chunkshape=%s" % (tuple(int(c) for c in chunk),)
    if isinstance(node, tables.Table):
        out.append("%s%s  [Table] nrows=%d%s" % (ind, node._v_pathname, node.nrows, extra))
    else:
        out.append("%s%s  [%s] shape=%s dtype=%s%s" % (ind, node._v_pathname, cls, shape, dtype, extra))
    dump_attrs(node, ind + "    ", out)
    if isinstance(node, tables.Table):
        desc = node.coldtypes
        for cname in node.colnames:
            out.append("%s    col %-28s %s" % (ind, cname, desc[cname]))
        n = min(rows, node.nrows)
        for i in range(n):
            r = node[i]
            out.append("%s    row[%d]: %s" % (ind, i, ", ".join(
                "%s=%s" % (c, short(_dec(r[c]), 80)) for c in node.colnames)))
        if node.nrows > n:
            out.append("%s    ... (%d more rows)" % (ind, node.nrows - n))
    elif isinstance(node, (tables.Array, tables.VLArray)):
        try:
            data = node.read()
        except Exception as exc:  # pragma: no cover
            out.append("%s    <unreadable: %s>" % (ind, exc))
            return
        if isinstance(node, tables.VLArray):
            out.append("%s    atom=%r" % (ind, node.atom))
            items = list(data)[:max_values]
            out.append("%s    values: %s" % (ind, [short(_dec(x), 80) for x in items]))
        else:
            arr = np.asarray(data)
            if arr.size <= max_values:
                out.append("%s    values: %s" % (ind, short(data, 300)))
            else:
                out.append("%s    values (first %d): %s" % (ind, max_values, short(arr.ravel()[:max_values], 300)))


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("files", nargs="+")
    ap.add_argument("--rows", type=int, default=8)
    ap.add_argument("--max-values", type=int, default=12)
    ap.add_argument("--skip", action="append", default=[],
                    help="fnmatch pattern of a group path whose subtree is not dumped "
                         "(repeatable), e.g. '/*/config'")
    a = ap.parse_args(argv)
    SKIP[:] = a.skip
    out = []
    out.append("# HDF5 layout dump (dump_h5_layout.py, tables %s, numpy %s)" % (tables.__version__, np.__version__))
    out.append("# Group lines: path [Group]; leaves: path [Class] shape dtype; @name = user attribute")
    out.append("# Table rows show at most --rows rows (default 8).")
    for f in a.files:
        dump_file(f, a.rows, a.max_values, out)
    sys.stdout.write("\n".join(out) + "\n")


if __name__ == "__main__":
    main()
