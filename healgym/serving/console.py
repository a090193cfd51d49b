"""The web console for the humans: server-rendered pages on the adapter's own app, same tokens.

GET  /console/login            sign in with the operator (or read-only) token and a name
GET  /console                  pending approvals (explanation, signals), approve / reject /
                               override with a reason, the live state of each target, recent
                               decisions and incidents, pause and the kill switch
POST /console/decisions/{id}/{approve|reject|override}
POST /console/pause, /console/resume, /console/kill-switch
POST /console/logout

A sign-in exchanges the token for a session cookie (random, ``HttpOnly``, ``SameSite=Strict``,
kept in memory: a restart signs everyone out); every form carries the session's CSRF token. A
read-only session sees everything and changes nothing (403). No build step: HTML from Python,
a few lines of JavaScript (refresh every 10 s unless a form is being filled in).
"""

from __future__ import annotations

import hmac
import html
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from healgym.errors import ServingError

COOKIE = "healgym_session"

CSS = """body{font:14px/1.4 system-ui,sans-serif;margin:0;background:#f6f7f9;color:#222}
header{background:#1f2937;color:#fff;padding:10px 18px;display:flex;gap:18px;align-items:center}
header b{font-size:16px}.pill{padding:2px 8px;border-radius:9px;background:#374151}
.bad{background:#b91c1c}.ok{background:#15803d}.warn{background:#b45309}
main{padding:12px 18px}section{background:#fff;border:1px solid #e5e7eb;border-radius:6px;
margin:0 0 14px;padding:10px 14px}h2{font-size:15px;margin:4px 0 8px}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #eee;padding:4px 6px;
text-align:left;vertical-align:top;font-size:13px}th{background:#f3f4f6}
input[type=text],input[type=password],select{padding:4px;border:1px solid #ccc;border-radius:4px}
button{padding:4px 10px;border:1px solid #888;border-radius:4px;background:#fff;cursor:pointer}
button.primary{background:#1d4ed8;color:#fff;border-color:#1d4ed8}
button.danger{background:#b91c1c;color:#fff;border-color:#b91c1c}
.msg{padding:8px 12px;background:#ecfdf5;border:1px solid #a7f3d0;margin-bottom:12px}
.err{background:#fef2f2;border-color:#fecaca}code{font-size:12px}.muted{color:#6b7280}
form.inline{display:inline}"""

REFRESH_JS = """<script>
// refresh every 10 s, unless someone is typing into a form
setInterval(function () {
  var a = document.activeElement;
  if (!a || !/INPUT|SELECT|TEXTAREA/.test(a.tagName)) { location.reload(); }
}, 10000);
</script>"""


@dataclass
class Session:
    role: str  # "operator" or "reader"
    operator: str
    csrf: str
    created: float


def _page(title: str, body: str, refresh: bool = False) -> str:
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
            f"</title><style>{CSS}</style></head><body>{body}"
            f"{REFRESH_JS if refresh else ''}</body></html>")


def _table(rows: list[list[str]], head: list[str]) -> str:
    if not rows:
        return "<p class='muted'>none</p>"
    return ("<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>"
            + "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
            + "</table>")


def _ts(t: float | None) -> str:
    return "-" if t is None else time.strftime("%H:%M:%S", time.gmtime(float(t)))


def mount_console(app: FastAPI, adapter: Any, role_of: Callable[[str | None], str | None]
                  ) -> None:
    """Add the console's routes to the adapter's API app; ``role_of('Bearer <token>')`` is the
    API's own token check (operator, reader or None)."""
    sessions: dict[str, Session] = {}
    e = html.escape

    def session(request: Request) -> Session | None:
        sid = request.cookies.get(COOKIE)
        return sessions.get(sid) if sid else None

    def to_login() -> RedirectResponse:
        return RedirectResponse("/console/login", status_code=303)

    def guard_post(request: Request, csrf: str) -> Session | Response:
        s = session(request)
        if s is None:
            return to_login()
        if not hmac.compare_digest(csrf.encode(), s.csrf.encode()):
            return HTMLResponse(_page("refused", "<main><p class='msg err'>The form's CSRF "
                                      "token does not match this session: reload the page."
                                      "</p></main>"), status_code=403)
        if s.role != "operator":
            return HTMLResponse(_page("refused", "<main><p class='msg err'>A read-only "
                                      "session cannot change anything: sign in with the "
                                      "operator token.</p></main>"), status_code=403)
        return s

    def back(msg: str, error: bool = False) -> RedirectResponse:
        from urllib.parse import quote

        return RedirectResponse(f"/console?{'err' if error else 'msg'}={quote(msg)}",
                                status_code=303)

    @app.get("/console/login", response_class=HTMLResponse)
    def login_page(err: str = "") -> str:
        note = f"<p class='msg err'>{e(err)}</p>" if err else ""
        return _page("healgym console: sign in", f"""<header><b>healgym</b> console</header>
<main><section><h2>Sign in</h2>{note}
<form method="post" action="/console/login">
<p><label>Your name (logged with every verdict)<br><input type="text" name="operator"
 id="operator" required maxlength="200"></label></p>
<p><label>API token (the operator token, or the read-only one)<br><input type="password"
 name="token" id="token" required></label></p>
<p><button class="primary" type="submit" id="signin">Sign in</button></p></form>
<p class="muted">The token is the one the adapter reads from <code>api.token_env</code> or
<code>api.token_file</code>.</p></section></main>""")

    @app.post("/console/login")
    def login(operator: str = Form(...), token: str = Form(...)) -> Response:
        role = role_of(f"Bearer {token}")
        if role is None or not operator.strip():
            return RedirectResponse("/console/login?err=wrong+token", status_code=303)
        sid = secrets.token_urlsafe(32)
        sessions[sid] = Session(role, operator.strip()[:200], secrets.token_urlsafe(24),
                                time.time())
        r = RedirectResponse("/console", status_code=303)
        r.set_cookie(COOKIE, sid, httponly=True, samesite="strict", path="/console")
        return r

    @app.post("/console/logout")
    def logout(request: Request) -> Response:
        sessions.pop(request.cookies.get(COOKIE) or "", None)
        r = to_login()
        r.delete_cookie(COOKIE, path="/console")
        return r

    @app.get("/console", response_class=HTMLResponse)
    def overview(request: Request, msg: str = "", err: str = "") -> Response:
        s = session(request)
        if s is None:
            return to_login()
        return HTMLResponse(render(s, msg, err))

    def render(s: Session, msg: str, err: str) -> str:
        a = adapter
        ks = a.conf.guard.kill_switch_file
        ks_on = bool(ks) and Path(ks).exists()
        recent = a.log.records(limit=40)
        pending = [r for did in list(a.pending) if (r := a.log.record(did)) is not None]
        can = s.role == "operator"
        dis = "" if can else " disabled"
        hidden = f"<input type='hidden' name='csrf' value='{e(s.csrf)}'>"
        status = (f"<span class='pill {'bad' if ks_on else 'ok'}' id='kill-switch-state'>kill "
                  f"switch {'ON' if ks_on else 'off'}</span><span class='pill "
                  f"{'warn' if a.paused else 'ok'}' id='pause-state'>"
                  f"{'paused' if a.paused else 'running'}</span><span class='pill'>"
                  f"{len(a.pending)} pending</span><span class='pill "
                  f"{'bad' if a.incident else 'ok'}'>"
                  f"{'incident open since ' + _ts(a.incident.start) if a.incident else 'healthy'}"
                  f"</span>")
        head = (f"<header><b>healgym</b> console <span>{e(a.policy.name)} "
                f"{e(a.policy_version)}</span>{status}<span style='margin-left:auto'>"
                f"{e(s.operator)} ({'operator' if can else 'read-only'})</span>"
                f"<form class='inline' method='post' action='/console/logout'>"
                f"<button type='submit'>sign out</button></form></header>")
        flash = (f"<p class='msg' id='flash'>{e(msg)}</p>" if msg else "") + \
            (f"<p class='msg err' id='flash'>{e(err)}</p>" if err else "")
        options = "".join(f"<option>{e(n)}</option>" for n in a.names)
        prow = []
        for r in pending:
            expl = r.get("explanation") or {}
            sig = r.get("signals") or {}
            target = next((i.target for i in a.infos if i.name == r["proposed_action"]), "")
            # the proposed action's target first, then the pipeline's signals
            top = sorted(((k, v) for k, v in sig.items() if isinstance(v, (int, float))),
                         key=lambda kv: (f"[{target}]" not in kv[0], "[" in kv[0], kv[0]))[:12]
            did = e(r["id"])
            forms = (f"<form method='post' action='/console/decisions/{did}/approve' "
                     f"class='inline'>{hidden}<input type='text' name='reason' "
                     f"placeholder='reason' required id='reason-{did}'{dis}> "
                     f"<button class='primary' name='verb' value='approve' "
                     f"id='approve-{did}'{dis}>Approve</button> <button formaction='/console/"
                     f"decisions/{did}/reject' id='reject-{did}'{dis}>Reject</button> "
                     f"<select name='action' id='action-{did}'{dis}>{options}</select> "
                     f"<button formaction='/console/decisions/{did}/override' "
                     f"id='override-{did}'{dis}>Override</button></form>")
            prow.append([f"<code>{did[:8]}</code><br>{_ts(r['created_at'])}",
                         f"<b>{e(str(r['proposed_action']))}</b>",
                         e(", ".join(f"{k}: {v}" for k, v in expl.items())[:300]),
                         "<br>".join(f"{e(k)} = {float(v):.3g}" for k, v in top), forms])
        last = next((r for r in reversed(recent) if r.get("signals")), None)
        sig = (last or {}).get("signals") or {}
        trows = []
        for st in a.model.stages:
            def g(name: str, st: str = st) -> str:
                v = sig.get(f"{name}[{st}]")
                return "-" if v is None else f"{float(v):.3g}"
            trows.append([f"<b>{e(st)}</b>", g("latency_p95_ms"), g("error_rate"),
                          g("throughput_rps"), g("cpu_pct"), g("memory_pct"), g("replicas")])
        drows = [[_ts(r["created_at"]), e(str(r["state"])), e(str(r["proposed_action"])),
                  e(str(r["executed_action"] or "")),
                  e(str((r.get("human") or {}).get("operator") or "")),
                  e(str(r.get("verification") or "")), e(str(r.get("reason") or ""))[:160]]
                 for r in reversed(recent[-20:])]
        irows = [[_ts(r["incident"].get("start")), _ts(r["incident"].get("end")),
                  "yes" if r["incident"].get("resolved") else "no",
                  f"{r['incident'].get('ttr_s') or 0:.0f}",
                  str(len(r["incident"].get("acted") or []))]
                 for r in reversed(recent) if r.get("incident")]
        controls = (f"<form class='inline' method='post' action='/console/"
                    f"{'resume' if a.paused else 'pause'}'>{hidden}<input type='text' "
                    f"name='reason' placeholder='reason' required id='pause-reason'{dis}> "
                    f"<button id='pause-button'{dis}>{'Resume' if a.paused else 'Pause'}"
                    f"</button></form> ")
        if ks:
            controls += (f"<form class='inline' method='post' action='/console/kill-switch'>"
                         f"{hidden}<input type='hidden' name='on' value="
                         f"'{'0' if ks_on else '1'}'><input type='text' name='reason' "
                         f"placeholder='reason' required id='ks-reason'{dis}> <button "
                         f"class='danger' id='kill-switch-button'{dis}>"
                         f"{'Lift the kill switch' if ks_on else 'Stop everything'}</button>"
                         f" <span class='muted'>{e(ks)}</span></form>")
        return _page("healgym console", head + "<main>" + flash +
                     "<section id='pending'><h2>Pending approvals</h2>" +
                     _table(prow, ["decision", "proposed", "why", "signals", "verdict"]) +
                     "</section><section id='targets'><h2>Targets (last reading "
                     f"{_ts((last or {}).get('created_at'))})</h2>" +
                     _table(trows, ["stage", "latency p95 ms", "error rate", "throughput",
                                    "cpu %", "memory %", "replicas"]) +
                     "</section><section id='controls'><h2>Controls</h2>" + controls +
                     "</section><section id='incidents'><h2>Incidents</h2>" +
                     _table(irows, ["start", "end", "resolved", "TTR s", "actions"]) +
                     "</section><section id='decisions'><h2>Recent decisions</h2>" +
                     _table(drows, ["time", "state", "proposed", "executed", "operator",
                                    "verified", "reason"]) + "</section></main>",
                     refresh=True)

    def verdict(request: Request, did: str, verb: str, reason: str, action: str | None,
                csrf: str) -> Response:
        s = guard_post(request, csrf)
        if not isinstance(s, Session):
            return s
        try:
            if verb == "approve":
                adapter.approve(did, s.operator, reason)
            elif verb == "reject":
                adapter.reject(did, s.operator, reason)
            else:
                adapter.override(did, s.operator, action or "", reason)
        except ServingError as exc:
            return back(f"{verb} {did[:8]}: {exc}", error=True)
        return back(f"{verb} {did[:8]} by {s.operator}: done"
                    + (" (the action runs in the background)" if verb != "reject" else ""))

    @app.post("/console/decisions/{did}/approve")
    def approve(request: Request, did: str, reason: str = Form(...), csrf: str = Form(""),
                action: str = Form("")) -> Response:
        return verdict(request, did, "approve", reason, None, csrf)

    @app.post("/console/decisions/{did}/reject")
    def reject(request: Request, did: str, reason: str = Form(...), csrf: str = Form(""),
               action: str = Form("")) -> Response:
        return verdict(request, did, "reject", reason, None, csrf)

    @app.post("/console/decisions/{did}/override")
    def override(request: Request, did: str, reason: str = Form(...), action: str = Form(...),
                 csrf: str = Form("")) -> Response:
        return verdict(request, did, "override", reason, action, csrf)

    @app.post("/console/kill-switch")
    def kill_switch(request: Request, on: str = Form(...), reason: str = Form(...),
                    csrf: str = Form("")) -> Response:
        s = guard_post(request, csrf)
        if not isinstance(s, Session):
            return s
        ks = adapter.conf.guard.kill_switch_file
        if not ks:
            return back("no guard.kill_switch_file is configured", error=True)
        if on == "1":
            Path(ks).parent.mkdir(parents=True, exist_ok=True)
            Path(ks).write_text(f"{s.operator}: {reason}\n")
        else:
            Path(ks).unlink(missing_ok=True)
        adapter.alert(f"kill switch {'set' if on == '1' else 'lifted'} by {s.operator}: "
                      f"{reason}", "kill_switch", operator=s.operator)
        return back(f"kill switch {'ON: nothing is executed' if on == '1' else 'lifted'}")

    # last: the other /console/<name> routes must match first
    @app.post("/console/{verb}")
    def pause_or_resume(request: Request, verb: str, reason: str = Form(...),
                        csrf: str = Form("")) -> Response:
        if verb not in ("pause", "resume"):
            return HTMLResponse(_page("not found", "<main><p class='msg err'>No such page."
                                      "</p></main>"), status_code=404)
        s = guard_post(request, csrf)
        if not isinstance(s, Session):
            return s
        (adapter.pause if verb == "pause" else adapter.resume)(s.operator, reason)
        return back(f"{verb}d by {s.operator}")
