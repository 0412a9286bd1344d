"""The Kylberg Texture Dataset: download the per-class zips (resuming), verify them, extract them.

    fetch_kylberg(url, "data/kylberg-zips", "data/kylberg")   # the data folder appears only when complete
"""
import http.client
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.request
import zipfile

from tqdm import tqdm

from texture.data.images import DataError, is_image

KYLBERG = ("blanket1 blanket2 canvas1 ceiling1 ceiling2 cushion1 floor1 floor2 grass1 lentils1 linseeds1 "
           "oatmeal1 pearlsugar1 rice1 rice2 rug1 sand1 scarf1 scarf2 screen1 seat1 seat2 sesameseeds1 "
           "stone1 stone2 stone3 stoneslab1 wall1").split()


def download(url, path, desc=None):
    """Fetch url to path through path.part, resuming a partial file with an HTTP Range request."""
    part = path + ".part"
    have = os.path.getsize(part) if os.path.exists(part) else 0
    req = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        resp = urllib.request.urlopen(req, timeout=60)
    except urllib.error.HTTPError as e:
        if e.code == 416 and have:  # nothing left to fetch: the part file is whole
            os.replace(part, path)
            return
        raise DataError(f"download failed: {url} (HTTP {e.code} {e.reason})")
    except (urllib.error.URLError, OSError) as e:
        raise DataError(f"download failed: {url} ({getattr(e, 'reason', e)})")
    with resp:
        if resp.status != 206:  # the server ignored Range: start again
            have = 0
        total = resp.headers.get("Content-Range", "").rpartition("/")[2]
        total = int(total) if total.isdigit() else (have + resp.length if resp.length is not None else None)
        try:
            with open(part, "ab" if have else "wb") as f, \
                    tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                         desc=desc or os.path.basename(path), leave=False) as bar:
                while chunk := resp.read(1 << 16):
                    f.write(chunk)
                    bar.update(len(chunk))
        except (OSError, http.client.HTTPException) as e:
            raise DataError(f"download interrupted: {url} ({e}); run again to resume")
    if total is not None and os.path.getsize(part) != total:
        got = os.path.getsize(part)
        raise DataError(f"download incomplete: {url} ({got} of {total} bytes); run again to resume")
    os.replace(part, path)


def verify_zip(path):
    """Refuse entries that would land outside the target folder, and truncated or corrupt zips."""
    try:
        with zipfile.ZipFile(path) as z:
            for n in z.namelist():
                if n.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", n) or ".." in re.split(r"[/\\]", n):
                    raise DataError(f"{path}: refused, entry {n!r} would be written outside the data folder")
            bad = z.testzip()
    except (zipfile.BadZipFile, OSError, EOFError, ValueError) as e:
        raise DataError(f"{path}: truncated or corrupt zip ({e}); delete it and run again")
    if bad is not None:
        raise DataError(f"{path}: corrupt zip (bad CRC in {bad}); delete it and run again")


def extract_class(zip_path, dest):
    """Extract the images of one class zip into the folder dest, all or nothing (temp dir + rename)."""
    from torchvision.datasets.utils import extract_archive  # imported here: it costs seconds at start-up

    verify_zip(zip_path)
    parent = os.path.dirname(dest)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(dir=parent, prefix=".extract-")
    try:
        extract_archive(zip_path, os.path.join(tmp, "raw"))
        out = os.path.join(tmp, "out")
        os.makedirs(out)
        for root, _, files in os.walk(os.path.join(tmp, "raw")):
            for f in files:
                rel = os.path.relpath(os.path.join(root, f), tmp)
                if is_image(rel):  # class zips may or may not hold a folder: keep the files only
                    os.replace(os.path.join(root, f), os.path.join(out, f))
        if not os.listdir(out):
            raise DataError(f"{zip_path}: no images inside")
        os.replace(out, dest)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def fetch_kylberg(url, zips_dir, data_dir, classes=KYLBERG):
    """Download the missing per-class zips, then extract all of them; data_dir appears only when complete."""
    os.makedirs(zips_dir, exist_ok=True)
    zips = {c: os.path.join(zips_dir, f"{c}-without-rotations.zip") for c in classes}
    missing = [c for c in classes if not os.path.isfile(zips[c])]
    if missing:
        print(f"downloading {len(missing)} zips from {url} to {zips_dir}")
    for k, c in enumerate(missing):
        try:
            download(url.rstrip("/") + "/" + os.path.basename(zips[c]), zips[c], f"{c} ({k + 1}/{len(missing)})")
        except DataError as e:
            raise DataError(f"{e}; without network, put the {len(classes)} <class>-without-rotations.zip files "
                            f"in a folder and pass --zips-dir DIR, or pass an extracted dataset with "
                            f"--data-dir DIR ({data_dir} does not hold one)") from None
    staging = data_dir.rstrip("/\\") + ".partial"  # classes extracted by an interrupted run are kept
    for c in classes:
        if not os.path.isdir(os.path.join(staging, c)):
            extract_class(zips[c], os.path.join(staging, c))
    if os.path.isdir(data_dir):
        os.rmdir(data_dir)  # empty (checked by the caller)
    os.replace(staging, data_dir)


def needs_fetch(data_dir):
    return not os.path.isdir(data_dir) or not os.listdir(data_dir)

