"""Python's smtplib (an independent SMTP client) against a running `mta run`.

usage: smtp_clients.py HOST PORT RELAY_SOURCE OTHER_SOURCE
RELAY_SOURCE may relay; OTHER_SOURCE may not. Prints one JSON line per check; exits 1 on a failure.
"""
import json
import smtplib
import socket
import ssl
import sys

HOST, PORT, RELAY_SRC, OTHER_SRC = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
failures = []


def check(name, cond, detail):
    print(json.dumps({"check": name, "ok": bool(cond), "detail": str(detail)}))
    if not cond:
        failures.append(name)


def client(src):
    return smtplib.SMTP(HOST, PORT, source_address=(src, 0), timeout=20)


MSG = (b"From: news@sender.test\r\nTo: a@dest.test\r\nSubject: smtplib\r\n"
       b"Message-ID: <py-%d@sender.test>\r\n\r\nhello from smtplib\r\n")

# EHLO advertises what the issue asks for.
s = client(RELAY_SRC)
code, _ = s.ehlo("py.test")
feats = set(s.esmtp_features)
check("ehlo", code == 250 and {"pipelining", "size", "starttls", "8bitmime", "enhancedstatuscodes"} <= feats, feats)

# A plain transaction with two recipients.
refused = s.sendmail("bounces@sender.test", ["a@dest.test", "b@dest.test"], MSG % 1)
check("sendmail", refused == {}, refused)

# SIZE: a declared size over max-message-size is refused at MAIL.
code, msg = s.mail("bounces@sender.test", ["SIZE=99999999"])
check("size refusal", code == 552 and b"5.3.4" in msg, (code, msg))
s.rset()

# STARTTLS, then a transaction over TLS.
ctx = ssl.create_default_context()
ctx.check_hostname = False
ctx.verify_mode = ssl.CERT_NONE
code, _ = s.starttls(context=ctx)
check("starttls", code == 220 and isinstance(s.sock, ssl.SSLSocket), code)
s.ehlo("py.test")
refused = s.sendmail("bounces@sender.test", ["c@dest.test"], MSG % 2)
check("sendmail over tls", refused == {}, refused)
s.quit()

# Relaying from a source that may not: 550 5.7.1 at RCPT.
s = client(OTHER_SRC)
s.ehlo("py.test")
s.mail("someone@elsewhere.test")
code, msg = s.rcpt("victim@dest.test")
check("relay refusal", code == 550 and msg.startswith(b"5.7.1"), (code, msg))
s.quit()


def raw(script, src, timeout=20):
    sock = socket.create_connection((HOST, PORT), timeout=timeout, source_address=(src, 0))
    sock.recv(4096)
    sock.sendall(script)
    out = b""
    while True:
        try:
            chunk = sock.recv(65536)
        except socket.timeout:
            break
        if not chunk:
            break
        out += chunk
    sock.close()
    return out.decode("latin-1")


# Pipelining: every command in one write, one reply each, in order.
out = raw(b"EHLO py.test\r\nMAIL FROM:<bounces@sender.test>\r\nRCPT TO:<p1@dest.test>\r\n"
          b"RCPT TO:<p2@dest.test>\r\nDATA\r\n", RELAY_SRC, timeout=1)
lines = [l for l in out.split("\r\n") if l and not l.startswith("250-")]
codes = [l[:3] for l in lines]
check("pipelining", codes[1:5] == ["250", "250", "250", "354"], lines)

# Bare LF inside DATA: refused and disconnected, nothing queued.
out = raw(b"EHLO py.test\r\nMAIL FROM:<bounces@sender.test>\r\nRCPT TO:<s@dest.test>\r\nDATA\r\n"
          b"Subject: x\r\n\r\nhello\n.\nMAIL FROM:<evil@x>\r\n.\r\nQUIT\r\n", RELAY_SRC)
check("bare LF refusal", "521 5.5.2" in out and "queued" not in out, out)

# Over-long command line.
out = raw(b"EHLO py.test\r\nNOOP " + b"x" * 2000 + b"\r\nQUIT\r\n", RELAY_SRC)
check("long line", "500 5.5.2" in out, out)

sys.exit(1 if failures else 0)
