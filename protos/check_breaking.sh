#!/usr/bin/env bash
# proto_breaking: the contract in this directory must not break the released v1 snapshot.
# With --self-test, first proves the guard can fail: a copy of the protos with one field
# removed must be reported as breaking.
set -euo pipefail
buf="$1"; shift
here="$(cd "$(dirname "$0")" && pwd)"
against="$here/released/continuum-v1.binpb"
if [ "${1:-}" = "--self-test" ]; then
  tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
  cp -r "$here/buf.yaml" "$here/continuum" "$tmp/"
  # Remove the first field of Appointment: a wire- and source-breaking change.
  f="$tmp/continuum/scheduling/v1/appointment.proto"
  python3 - "$f" <<'PY'
import re, sys
p = sys.argv[1]; s = open(p).read()
m = re.search(r"message Appointment \{(.*?)\n\}", s, re.S)
body = m.group(1)
field = re.search(r"\n  [^/\n][^\n]*= \d+;", body).group(0)
open(p, "w").write(s.replace(body, body.replace(field, "", 1), 1))
PY
  if (cd "$tmp" && "$buf" breaking --against "$against" >/dev/null 2>&1); then
    echo "self-test FAILED: removing a field of Appointment was not reported as breaking"; exit 1
  fi
  echo "self-test ok: a removed field is reported as breaking"
fi
cd "$here" && "$buf" breaking --against "$against" && echo "no breaking change against $against"
