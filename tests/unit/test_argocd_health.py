"""The Argo CD health check (gitops/argocd/livekitingress-health.lua) run by a real Lua 5.1
interpreter against CRs recorded from a running stack, one per state (gitops/argocd/health_test.yaml).

Argo CD runs a health script from argocd-cm in gopher-lua, a Lua 5.1, with the live object as
the global table `obj` and only the base and table libraries (and a reduced os). The harness
builds `obj` as a Lua table literal (as Argo CD converts the object: no JSON decoding in Lua)
and runs the script in such a sandbox, so a script that leans on `string.*`, `math.*` or
`s:method()` fails here as it would there.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from ingress_operator.errors import DuplicateIngressId, InvalidArgument, StreamKeySecretMissing
from ingress_operator.models import IngressStatus, InputType

ARGOCD = Path(__file__).resolve().parents[2] / "gitops" / "argocd"
SCRIPT = ARGOCD / "livekitingress-health.lua"
CASES: list[dict[str, Any]] = yaml.safe_load((ARGOCD / "health_test.yaml").read_text())["tests"]

# Runs the script as Argo CD does: `obj` set, the string library's functions and methods
# (Argo CD opens no string library for a script from argocd-cm), math, io and os out of reach.
HARNESS = """
local script = assert(loadfile(%s))
local env = {obj = %s}
for name, value in pairs(_G) do
  if name ~= "string" and name ~= "math" and name ~= "io" and name ~= "os"
      and name ~= "debug" and name ~= "coroutine" then
    env[name] = value
  end
end
setfenv(script, env)
local strings = getmetatable("")
strings.__index = nil
local ok, hs = pcall(script)
strings.__index = string
if not ok then
  io.stderr:write(tostring(hs))
  os.exit(2)
end
io.write(hs.status, "\\n", hs.message or "")
"""


def lua_literal(value: Any) -> str:
    """A JSON-like value as a Lua table constructor (as Argo CD hands the object to Lua)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, str):
        # Decimal escapes for every byte outside printable ASCII: Lua 5.1 has no \x or \u.
        chars = (chr(b) if 32 <= b < 127 and b not in (34, 92) else f"\\{b:03d}" for b in value.encode())
        return '"' + "".join(chars) + '"'
    if isinstance(value, list):
        return "{" + ", ".join(lua_literal(v) for v in value) + "}"
    if isinstance(value, dict):
        return "{" + ", ".join(f"[{lua_literal(str(k))}] = {lua_literal(v)}" for k, v in value.items()) + "}"
    raise TypeError(f"not a JSON value: {value!r}")


def health(obj: dict[str, Any]) -> tuple[str, str]:
    """(status, message) the script returns for `obj`."""
    lua = shutil.which("lua5.1")
    assert lua, "lua5.1 is not installed (tools/install.sh installs it)"
    program = HARNESS % (lua_literal(str(SCRIPT)), lua_literal(obj))
    run = subprocess.run([lua, "-"], input=program, capture_output=True, text=True, timeout=10)
    assert run.returncode == 0, run.stderr
    status, _, message = run.stdout.partition("\n")
    return status, message


def fixture(case: dict[str, Any]) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((ARGOCD / case["inputPath"]).read_text())
    return loaded


@pytest.mark.parametrize("case", CASES, ids=lambda c: Path(c["inputPath"]).stem)
def test_each_recorded_state_gets_its_health(case: dict[str, Any]) -> None:
    expected = case["healthStatus"]
    assert health(fixture(case)) == (expected["status"], expected["message"])


def test_the_recordings_cover_every_state_reason_and_input_type() -> None:
    """A new endpoint status, Ready reason or input type in the operator needs a recording here."""
    objs = [fixture(case) for case in CASES]
    assert {f"testdata/{p.name}" for p in (ARGOCD / "testdata").iterdir()} == {c["inputPath"] for c in CASES}
    reasons = {
        c["reason"] for o in objs for c in o.get("status", {}).get("conditions", []) if c["type"] == "Ready"
    }
    errors = {InvalidArgument.reason, StreamKeySecretMissing.reason, DuplicateIngressId.reason}
    assert reasons == {"Ready"} | errors
    states = {o["status"]["state"]["status"] for o in objs if "state" in o.get("status", {})}
    assert states == {s.value for s in IngressStatus}
    assert {o["spec"]["inputType"] for o in objs} == {t.value for t in InputType}
