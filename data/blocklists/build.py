"""Rebuild data/blocklists/urlhaus.txt from Debian's webext-ublock-origin-firefox package.

The package ships a snapshot of urlhaus-filter (malware-filter project, CC0-1.0), built from
abuse.ch URLhaus. We keep its whole-host entries (domains and IP addresses); entries with a path
(`host/path`, one malicious download on an otherwise ordinary host) are left out, because a domain
list blocks whole hosts. Needs `apt-get` (Debian's archive) and `dpkg-deb`; no other network.

    python data/blocklists/build.py [--deb path/to/webext-ublock-origin-firefox_*.deb]
"""
from __future__ import annotations

import argparse
import glob
import subprocess
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
MEMBER = "urlhaus-filter/urlhaus-filter-online.txt"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--deb", help="the .deb to read (default: apt-get download it)")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        deb = args.deb
        if deb is None:
            subprocess.run(["apt-get", "download", "webext-ublock-origin-firefox"], cwd=tmp, check=True)
            deb = glob.glob(f"{tmp}/*.deb")[0]
        version = subprocess.run(["dpkg-deb", "-f", deb, "Version"], capture_output=True, text=True, check=True).stdout.strip()
        subprocess.run(["dpkg-deb", "-x", deb, f"{tmp}/x"], check=True)
        src = next(Path(tmp, "x").rglob(MEMBER))
        lines = src.read_text().splitlines()
    header = [ln for ln in lines if ln.startswith("!")]
    entries = [ln.strip().lower() for ln in lines if ln.strip() and not ln.startswith("!")]
    hosts = sorted({e for e in entries if "/" not in e})
    out = [f"# urlhaus-filter (CC0-1.0), whole-host entries only: {len(hosts)} of {len(entries)} entries",
           f"# from Debian webext-ublock-origin-firefox {version}, {MEMBER}",
           *(f"# {h.lstrip('! ')}" for h in header), *hosts]
    (HERE / "urlhaus.txt").write_text("\n".join(out) + "\n")
    print(f"urlhaus.txt: {len(hosts)} hosts ({len(entries) - len(hosts)} host/path entries left out)")


if __name__ == "__main__":
    main()
