#!/usr/bin/python3
"""SMTP capture server for gobearmon's notification tests (aiosmtpd).

Every accepted message becomes OUTDIR/NNNN.json: the envelope (mail_from, rcpt_tos), whether
the session was encrypted (tls), the AUTH login, and the message decoded with Python's email
parser (subject, from, to, content_transfer_encoding, body).
Every line a client sends, commands and message alike, is appended to OUTDIR/../wire.jsonl as
{"tls": bool, "line": str} (tls: the connection was encrypted when the line arrived), so a test
can tell what went over the wire in clear.
Options: --tls-cert/--tls-key offer STARTTLS, or with --implicit-tls speak TLS from the first
byte; --fail-rcpt ADDR answers RCPT TO:<ADDR> with 550; --require-auth refuses MAIL before AUTH.
"""
import argparse, asyncio, email, email.policy, itertools, json, os, signal, ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword

ap = argparse.ArgumentParser()
ap.add_argument("outdir")
ap.add_argument("--port", type=int, required=True)
ap.add_argument("--tls-cert")
ap.add_argument("--tls-key")
ap.add_argument("--implicit-tls", action="store_true")
ap.add_argument("--require-auth", action="store_true")
ap.add_argument("--fail-rcpt", action="append", default=[])
args = ap.parse_args()
os.makedirs(args.outdir, exist_ok=True)
counter = itertools.count(1)
wire = open(os.path.join(os.path.dirname(os.path.abspath(args.outdir)), "wire.jsonl"), "a")


class RecordingSMTP(SMTP):
    """Records every line received before aiosmtpd reads it (decrypted after STARTTLS)."""

    def data_received(self, data):
        tls = self.transport is not None and \
            self.transport.get_extra_info("ssl_object") is not None
        for line in data.decode("utf-8", "replace").splitlines():
            wire.write(json.dumps({"tls": tls, "line": line}) + "\n")
        wire.flush()
        super().data_received(data)


class RecordingController(Controller):
    def factory(self):
        return RecordingSMTP(self.handler, **self.SMTP_kwargs)


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in args.fail_rcpt:
            return "550 5.1.1 mailbox unavailable (test)"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        raw = envelope.original_content or envelope.content
        msg = email.message_from_bytes(raw, policy=email.policy.default)
        auth = session.auth_data
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "tls": args.implicit_tls or session.ssl is not None,
            "auth_login": auth.login.decode() if isinstance(auth, LoginPassword) else None,
            "subject": str(msg["subject"]),
            "from": str(msg["from"]),
            "to": str(msg["to"]),
            "content_transfer_encoding": str(msg["content-transfer-encoding"]),
            "content_type": str(msg["content-type"]),
            "message_id": msg["message-id"] and str(msg["message-id"]),
            "date": msg["date"] and str(msg["date"]),
            "helo": session.host_name,
            "body": msg.get_content(),
        }
        path = os.path.join(args.outdir, "%04d.json" % next(counter))
        with open(path + ".tmp", "w") as f:
            json.dump(record, f)
        os.rename(path + ".tmp", path)  # readers never see half a file
        return "250 Message accepted for delivery"


def authenticator(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=True, auth_data=auth_data)


context = None
if args.tls_cert:
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(args.tls_cert, args.tls_key)
kwargs = dict(hostname="127.0.0.1", port=args.port, authenticator=authenticator,
              auth_required=args.require_auth, auth_require_tls=False, decode_data=False)
if args.implicit_tls:
    kwargs["ssl_context"] = context
else:
    kwargs["tls_context"] = context
    kwargs["require_starttls"] = False
controller = RecordingController(Handler(), **kwargs)
controller.start()
print("listening", args.port, flush=True)
for s in (signal.SIGTERM, signal.SIGINT):
    signal.signal(s, lambda *_: (controller.stop(), os._exit(0)))
signal.pause()
