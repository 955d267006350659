#!/usr/bin/env bash
# A plain (non-editable) `pip install '.[portal]'` into a fresh venv, then used from another
# directory as a user would: one top-level name (callrec), the stage folders only inside it, the
# portal's templates and static files installed, and the installed `callrec` records and exports
# the demo capture. Exits non-zero, saying why, on the first thing that is not so.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
python=${PYTHON:-python3}
work=$(mktemp -d /tmp/callrec-install-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

"$python" -m venv "$work/venv"
"$work/venv/bin/python" -m pip install -q --upgrade pip
"$work/venv/bin/python" -m pip install -q "$repo[portal]"
site=$("$work/venv/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')

fail() { echo "install-check: $*" >&2; exit 1; }
top=$(cat "$site"/callrec-*.dist-info/top_level.txt)
[ "$top" = "callrec" ] || fail "top_level.txt names '$top', want callrec alone"
for stage in capture cli decode store recorder portal; do
    [ ! -e "$site/$stage" ] || fail "site-packages has a top-level $stage"
    [ -d "$site/callrec/$stage" ] || fail "callrec/$stage is not installed"
done
for data in templates/base.html templates/call.html static/player.js static/portal.css; do
    [ -f "$site/callrec/portal/$data" ] || fail "the portal's $data is not installed"
done

cd "$work"
"$work/venv/bin/python" -P -c 'import callrec.capture, callrec.decode, callrec.cli, callrec.portal.app' \
    || fail "callrec does not import from $work"
home="$work/home"
export CALLREC_PASSPHRASE="install-check passphrase"
"$work/venv/bin/callrec" --home "$home" keys init --private-key "$work/compliance.key" > /dev/null
"$work/venv/bin/callrec" --home "$home" import "$repo"/pcaps/demo/* > /dev/null
"$work/venv/bin/callrec" --home "$home" calls verify > /dev/null
"$work/venv/bin/callrec" --home "$home" calls export 1 --key "$work/compliance.key" --out "$work/call-1.wav" > /dev/null
[ -s "$work/call-1.wav" ] || fail "the export wrote nothing"
"$work/venv/bin/callrec" --home "$home" audit verify > /dev/null
echo "install-check: a plain install into a fresh venv installs callrec alone and records, verifies and exports the demo call"
