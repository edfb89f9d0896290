#!/usr/bin/env python3
"""One submission client for bench/smtp-bench.ts (BENCH_CLIENT_KINDS=smtplib): Python's
smtplib, one connection, sendmail() (DATA with dot-stuffing, as most scripts and MUAs
built on it send), AUTH PLAIN when a user is given. Sends one untimed message, then back
to back until the deadline, and prints each timed transaction's latency in ms (MAIL FROM
to the 250 after the data), one per line. After the untimed message it prints "ready" and
waits for a line on stdin, so the caller starts every client's clock (and its CPU
accounting) together. Errors go to stderr, counted by the caller.

usage: smtplib-client.py HOST PORT TLS(0|1) USER|- PASSWORD MESSAGE_FILE SENDER RCPT SECONDS
"""
import smtplib
import ssl
import sys
import time


def main() -> int:
    host, port, use_tls, user, password, message_file, sender, rcpt, seconds = sys.argv[1:10]
    with open(message_file, "rb") as f:
        message = f.read()
    if use_tls == "1":
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        client = smtplib.SMTP_SSL(host, int(port), context=context, timeout=60)
    else:
        client = smtplib.SMTP(host, int(port), timeout=60)
    client.ehlo("bench.example.org")
    if user != "-":
        client.login(user, password)  # AUTH PLAIN (smtplib prefers CRAM-MD5, then PLAIN, then LOGIN)
    client.sendmail(sender, [rcpt], message)
    print("ready", flush=True)
    sys.stdin.readline()
    deadline = time.monotonic() + float(seconds)
    out = []
    while time.monotonic() < deadline:
        started = time.perf_counter()
        try:
            client.sendmail(sender, [rcpt], message)
            out.append(f"{(time.perf_counter() - started) * 1000:.3f}")
        except smtplib.SMTPException as err:
            print(f"error: {err}", file=sys.stderr)
    try:
        client.quit()
    except smtplib.SMTPException:
        pass
    print("\n".join(out))
    return 0


if __name__ == "__main__":
    sys.exit(main())
