#!/bin/sh
# mypy finds modules by path: this makes build/typecheck/callrec/<stage> links to the stage folders
# at the repository root, so that `mypy` (MYPYPATH / mypy_path = build/typecheck) sees callrec.capture
# where setuptools' package_dir puts it. Run from the repository root; cheap, idempotent.
set -eu
tree=build/typecheck/callrec
mkdir -p "$tree"
for stage in capture decode store recorder cli portal; do
    ln -sfn "../../../$stage" "$tree/$stage"
done
