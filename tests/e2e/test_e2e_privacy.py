"""Privacy of the result views through a real ``mailtls serve`` (DESIGN §9).

The owner's result page shows the transcript (client address, username, EHLO string); the
shareable view and its JSON export hide them and the session code; every result response asks
not to be cached, indexed or referred.
"""

from __future__ import annotations

import smtplib
from pathlib import Path

import httpx
import pytest
from e2e_helpers import HOST, Api, serving

MARKER = "ehlo-marker.example"


@pytest.mark.timeout(40)
def test_shareable_view_hides_identifying_strings(tmp_path: Path) -> None:
    with serving(tmp_path / "var") as inst:
        api = Api(inst)
        run = api.create(("immediate", "t1"))
        api.start(run)
        port = inst.port_for(run.username, "smtp_submission")
        with smtplib.SMTP(HOST, port, timeout=5, local_hostname=MARKER) as s:
            s.ehlo()
            s.login(run.username, run.password)
        assert api.finish(run)["verdict"] == "FAIL"
        texts = api.texts(run)
        api.close()
        owner = texts["result_page"]
        assert MARKER in owner and run.username in owner and HOST in owner
        for name in ("share_page", "share_json"):
            shared = texts[name]
            assert "FAIL" in shared, name
            for secret in (MARKER, run.username, run.code, run.id, HOST):
                assert secret not in shared, (name, secret)
        for suffix in ("", ".json", ".csv"):
            resp = httpx.get(run.result_url + suffix, timeout=10)
            assert resp.status_code == 200
            assert resp.headers["referrer-policy"] == "no-referrer"
            assert "no-store" in resp.headers["cache-control"]
            assert "noindex" in resp.headers["x-robots-tag"]
