"""`gitlab-mci demo` end to end, as a user runs it; and a failed expectation makes it fail."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import pytest

from gitlab_mci import demo, demo_takeover


def test_the_demo_passes_end_to_end_in_ci() -> None:
    env = {**os.environ, "CI": "true"}
    for key in ("KUBECONFIG", "GITLAB_MCI_COMPUTE_ENDPOINT", "GOOGLE_CLOUD_PROJECT"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "gitlab_mci", "demo"], capture_output=True, text=True, env=env,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "✓ 40 requests: both clusters serve: prod1 20, prod2 20" in out
    assert "✓ prod1 fails: traffic moves to prod2: all traffic on prod2 after" in out
    assert "✓ teardown: lb destroy --release-ip leaves nothing behind: 0 owned resources" in out
    assert out.strip().splitlines()[-1].startswith("demo passed: 10 steps")
    assert "\x1b[" not in out  # plain lines in CI


def test_a_failed_expectation_stops_the_demo_and_says_where(capsys: pytest.CaptureFixture[str]) -> None:
    # A listener address where nothing answers: the traffic check must fail, and the steps after it not run.
    report = demo.run(fancy=False, listener=lambda sim, vip, port: "http://127.0.0.1:9/")
    assert not report.ok
    failed = [s for s in report.steps if not s.ok]
    assert [s.title for s in failed] == ["40 requests: both clusters serve"]
    assert report.steps[-1] is failed[0]
    assert "request(s) failed" in failed[0].detail
    assert demo.summary(report).startswith("demo FAILED at: 40 requests")


def test_the_takeover_demo_moves_the_recipes_kubemci_load_balancer_with_traffic_flowing_and_no_failed_request(
) -> None:
    env = {**os.environ, "CI": "true"}
    for key in ("KUBECONFIG", "GITLAB_MCI_COMPUTE_ENDPOINT", "GOOGLE_CLOUD_PROJECT"):
        env.pop(key, None)
    done = subprocess.run([sys.executable, "-m", "gitlab_mci", "demo", "--takeover"], capture_output=True, text=True,
                          env=env, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    out = done.stdout
    assert "✓ the recipe's load balancer: sim kubemci --lb shop --static-ip web-ip (HTTPS, certificate)" in out
    assert "✓ lb takeover --lb shop --address web-ip" in out
    assert "✓ takeover again: nothing to do (0 writes)" in out
    assert "✓ the old chain is gone; the forwarding rules keep web-ip" in out
    last = out.strip().splitlines()[-1]
    assert last.startswith("takeover demo passed:"), last
    served = int(re.search(r" (\d+) requests served", last).group(1))  # type: ignore[union-attr]
    assert served >= 20 and ", 0 failed" in last
    # The traffic went from Google's classic front end to the managed one, answered by both clusters throughout.
    assert re.search(r"paths classic \d+, managed \d+", out), out
    assert "\x1b[" not in out


def test_a_failed_request_during_the_takeover_fails_the_takeover_demo() -> None:
    # Traffic aimed where nothing answers: every request fails, so the demo must fail and say how many.
    report = demo_takeover.run(fancy=False, listener=lambda sim, vip, port: "http://127.0.0.1:9")
    assert not report.ok
    failed = [s for s in report.steps if not s.ok]
    assert failed[0].title.startswith("traffic through web-ip")
    assert "request(s) failed" in failed[0].detail
    assert demo_takeover.summary(report).startswith("takeover demo FAILED at: traffic through web-ip")
