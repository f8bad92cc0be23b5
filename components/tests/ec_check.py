"""Checks one build of components/mpaas/crypto/_ec.c against cases with known answers (standard library only).

    python ec_check.py MODULE CASES

MODULE is the built extension (a .so), CASES the JSON ec_cases.to_json writes: curve, point, digest,
signature and the expected answer (true, false, null where the key itself is refused, "either").
test_ec_sanitizers.py runs it under AddressSanitizer and UndefinedBehaviorSanitizer. It also feeds the
module malformed calls (wrong types, digest sizes, curve names) and DER-shaped garbage of every length
up to 80 bytes, whose answers need no oracle. Prints a summary; exits 1 when any answer is wrong.
"""

from __future__ import annotations

import json
import random
import sys
from importlib.util import module_from_spec, spec_from_file_location
from typing import Any


def load(path: str) -> Any:
    spec = spec_from_file_location("_ec", path)
    assert spec is not None and spec.loader is not None
    module = module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def main(module_path: str, cases_path: str) -> int:
    ec = load(module_path)
    rows = json.loads(open(cases_path).read())
    keys: dict[tuple[str, str], Any] = {}
    wrong = []
    for row in rows:
        slot = (row["curve"], row["point"])
        if slot not in keys:
            try:
                keys[slot] = ec.Key(row["curve"], bytes.fromhex(row["point"]))
            except ValueError:
                keys[slot] = None
        key = keys[slot]
        answer = None if key is None else key.verify(bytes.fromhex(row["digest"]), bytes.fromhex(row["signature"]))
        if row["expected"] != "either" and answer is not row["expected"]:
            wrong.append(f"{row['name']}: {answer} (expected {row['expected']})")

    # Calls that must raise, not crash or read out of bounds.
    point = next(bytes.fromhex(r["point"]) for r in rows if keys[(r["curve"], r["point"])] is not None)
    key = next(k for k in keys.values() if k is not None)
    misuse = 0
    for call in (
        lambda: ec.Key("P-384", point),
        lambda: ec.Key("P-256", point[:64]),
        lambda: ec.Key("P-256", b""),
        lambda: ec.Key("P-256"),
        lambda: key.verify(b"\x00" * 31, b"\x30\x06\x02\x01\x01\x02\x01\x01"),
        lambda: key.verify(b"\x00" * 33, b""),
        lambda: key.verify(b"\x00" * 32),
        lambda: key.verify("digest", b""),
        lambda: key.verify(b"\x00" * 32, bytearray(8)),
    ):
        try:
            call()
        except (TypeError, ValueError):
            misuse += 1
    if misuse != 9:
        wrong.append(f"{9 - misuse} malformed calls did not raise")

    # DER-shaped garbage: a random signature never verifies, on either curve.
    rng, garbage = random.Random(7), 0
    per_curve = {curve: k for (curve, _), k in keys.items() if k is not None}
    for total in range(81):
        for _ in range(40):
            b = bytearray(rng.randbytes(total))
            if total >= 2 and rng.random() < 0.9:
                b[0], b[1] = 0x30, (total - 2) if rng.random() < 0.7 else rng.randrange(256)
            if total >= 4 and rng.random() < 0.9:
                b[2], b[3] = 0x02, rng.randrange(256) if rng.random() < 0.3 else rng.randrange(40)
            for k in per_curve.values():
                garbage += 1
                if k.verify(rng.randbytes(32), bytes(b)):
                    wrong.append(f"garbage {bytes(b).hex()} verified")
    print(
        f"{len(rows)} cases, {len(keys)} keys, {misuse} malformed calls, {garbage} garbage signatures:",
        f"{len(wrong)} wrong",
    )
    for w in wrong[:20]:
        print("WRONG", w)
    return 1 if wrong else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
