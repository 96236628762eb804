"""PII masking in the operator tools: emails and phone numbers never printed by default."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from worker.tools.pii import mask, mask_raw, mask_text

local = st.from_regex(r"[a-z][a-z0-9._]{2,12}", fullmatch=True)
domain = st.from_regex(r"[a-z]{3,10}\.(com|in|example|co\.uk)", fullmatch=True)
emails = st.builds(lambda a, b: f"{a}@{b}", local, domain)
digits = st.from_regex(r"[6-9][0-9]{9}", fullmatch=True)


@given(email=emails, mobile=digits, cc=st.sampled_from(["91", "1", "44"]))
def test_identifiers_masked_in_every_shape(email: str, mobile: str, cc: str) -> None:
    event = {
        "eventName": "customerUpdated",
        "data": {
            "customerIdentifiers": {
                "customerId": 379499720,
                "instore": {"mobile": int(cc + mobile), "email": email, "externalId": "ext-1"},
            },
            "updatedFields": [
                {"fieldName": "mobile", "previousValue": cc + mobile, "currentValue": None},
                {"fieldName": "email ", "previousValue": email, "currentValue": email.upper()},
            ],
            "triggeringActivity": {"identifiers": [{"key": "MOBILE", "value": mobile}]},
            "notes": f"call +{cc} {mobile[:5]} {mobile[5:]} or write to {email}",
        },
    }
    out = orjson.dumps(mask(event)).decode()
    for secret in (email, email.upper(), mobile, cc + mobile, mobile[:5] + " " + mobile[5:]):
        assert secret not in out
    masked = mask(event)["data"]
    assert masked["customerIdentifiers"]["customerId"] == 379499720, "ids are not PII here"
    assert masked["customerIdentifiers"]["instore"]["externalId"] == "ext-1"
    assert masked["customerIdentifiers"]["instore"]["email"].endswith("@***" + email[email.rfind("."):])
    assert masked["updatedFields"][0]["currentValue"] is None


@given(email=emails, mobile=digits)
def test_raw_undecodable_text_masked(email: str, mobile: str) -> None:
    raw = f'{{"eventName": "x", "mobile" : "{mobile}", "contactEmail":"{email}", "phone": {mobile}, tru'
    out = mask_raw(raw)
    assert email not in out and mobile not in out
    assert out.startswith('{"eventName": "x"')


def test_plain_text_without_pii_unchanged() -> None:
    text = "refId 1655_684494987, bill 20240701-0042, +5 points"
    assert mask_text(text) == text
