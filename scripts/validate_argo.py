#!/usr/bin/env python3
"""Validate an Argo Workflow YAML (as `mpw export --to argo` writes it)
against Argo's own models, from the PyPI package `hera`.

    scripts/validate_argo.py WORKFLOW.yml

hera's pydantic models ignore unknown keys, so after loading, every key of
the file must also be in the model's dump: a misspelt or misplaced field is
an error, as `argo lint` would report it. Exit 0 valid, 1 invalid, 3 when
hera or PyYAML is not installed.
"""

import sys

try:
    import yaml
    from hera.workflows.models import Workflow
except ImportError as e:  # pragma: no cover
    print(f"validate_argo: {e}; pip install hera pyyaml", file=sys.stderr)
    sys.exit(3)


def dropped(src, dump, path=""):
    """Keys of `src` that the model did not keep."""
    out = []
    if isinstance(src, dict):
        if not isinstance(dump, dict):
            return [path or "."]
        for k, v in src.items():
            if k not in dump:
                out.append(f"{path}.{k}")
            else:
                out.extend(dropped(v, dump[k], f"{path}.{k}"))
    elif isinstance(src, list):
        if not isinstance(dump, list) or len(dump) != len(src):
            return [path or "."]
        for i, (a, b) in enumerate(zip(src, dump)):
            out.extend(dropped(a, b, f"{path}[{i}]"))
    return out


def main():
    with open(sys.argv[1]) as f:
        doc = yaml.safe_load(f)
    try:
        wf = Workflow.model_validate(doc)
    except Exception as e:
        print(f"invalid: {e}")
        return 1
    dump = wf.model_dump(by_alias=True, exclude_none=True, mode="json")
    bad = dropped(doc, dump)
    if bad:
        print("unknown fields: " + ", ".join(bad))
        return 1
    if doc.get("kind") != "Workflow" or doc.get("apiVersion") != "argoproj.io/v1alpha1":
        print("not an argoproj.io/v1alpha1 Workflow")
        return 1
    print(f"valid: {len(wf.spec.templates)} templates")
    return 0


if __name__ == "__main__":
    sys.exit(main())
