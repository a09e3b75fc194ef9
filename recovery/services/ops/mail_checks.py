"""Will our email arrive? The SMTP server takes us (connect, EHLO, STARTTLS, AUTH - nothing is
sent), and the sender domain publishes SPF, DKIM and DMARC, which Gmail and Yahoo require of
senders (docs/messaging.md, "Gmail and Yahoo sender rules"). A reminder asking for card details
is also what phishers imitate: DMARC at quarantine or reject keeps forged ones out of inboxes.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import smtplib
import ssl
from collections.abc import Sequence

import dns.exception
import dns.nameserver
import dns.resolver

from recovery.adapters.email import parse_smtp_url
from recovery.config import Settings
from recovery.services.ops.checks import Check, fail, ok, warn

SMTP_EXAMPLE = "smtp://user:pass@smtp.example.com:587?tls=starttls"


# ---- SMTP --------------------------------------------------------------------------------------


def _loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"


def smtp(settings: Settings, *, ssl_context: ssl.SSLContext | None, timeout: float) -> Check:
    """Connect, EHLO, STARTTLS where configured, log in; QUIT without sending anything."""
    if not settings.smtp_url:
        return warn(
            "SMTP",
            "RECOVERY_SMTP_URL is not set: emails stay in the local outbox and reach nobody",
            f"set RECOVERY_SMTP_URL, e.g. {SMTP_EXAMPLE}",
        )
    config = parse_smtp_url(settings.smtp_url)
    where = f"{config.host}:{config.port}"
    context = ssl_context or ssl.create_default_context()
    done = []
    try:
        if config.tls == "implicit":
            client: smtplib.SMTP = smtplib.SMTP_SSL(
                config.host, config.port, timeout=timeout, context=context
            )
            done.append("TLS")
        else:
            client = smtplib.SMTP(config.host, config.port, timeout=timeout)
        with client:
            code, _ = client.ehlo()
            if code != 250:
                return fail("SMTP", f"{where} refused EHLO ({code})", "check the host and port")
            done.append("EHLO")
            if config.tls == "starttls":
                if not client.has_extn("starttls"):
                    return fail(
                        "SMTP",
                        f"{where} does not offer STARTTLS",
                        "use the provider's submission port 587 (tls=starttls) or 465 "
                        "(tls=implicit); tls=none only for a relay on loopback",
                    )
                client.starttls(context=context)
                client.ehlo()
                done.append("STARTTLS")
            if config.username:
                if not client.has_extn("auth"):
                    return fail(
                        "SMTP",
                        f"{where} offers no AUTH{'' if config.tls != 'none' else ' without TLS'}",
                        "most servers allow AUTH only after STARTTLS: set tls=starttls (587) or "
                        "tls=implicit (465); or drop the user name for a relay that needs none",
                    )
                client.login(config.username, config.password or "")
                done.append("AUTH")
    except smtplib.SMTPAuthenticationError as exc:
        return fail(
            "SMTP",
            f"{where} refused the login ({exc.smtp_code})",
            "check the user name and password in RECOVERY_SMTP_URL (percent-encode @ : / in "
            "them); some providers want an app password or an API key as the password",
        )
    except ssl.SSLCertVerificationError as exc:
        return fail(
            "SMTP",
            f"the TLS certificate of {config.host} is not trusted ({exc.verify_message})",
            "use the host name written on the server's certificate in RECOVERY_SMTP_URL",
        )
    except ssl.SSLError as exc:
        return fail(
            "SMTP",
            f"TLS with {where} failed ({exc.reason or exc.__class__.__name__})",
            "port 465 wants tls=implicit, port 587 tls=starttls",
        )
    except (OSError, smtplib.SMTPException) as exc:
        return fail(
            "SMTP",
            f"cannot talk to {where} ({exc.__class__.__name__}; done: {' '.join(done) or '-'})",
            "check the host and port in RECOVERY_SMTP_URL and that this machine may reach them "
            "(firewall, provider allow-list)",
        )
    summary = f"{where}: {', '.join(done)} ok; nothing sent"
    if config.tls == "none" and not _loopback(config.host):
        return warn(
            "SMTP",
            f"{summary}, but without TLS: mail and password cross the network in clear",
            "set tls=starttls (port 587) or tls=implicit (465) in RECOVERY_SMTP_URL",
        )
    return ok("SMTP", summary)


# ---- DNS ---------------------------------------------------------------------------------------


class DnsUnavailable(Exception):
    pass


def _nameserver(value: str) -> dns.nameserver.Do53Nameserver:
    host, port = value, 53
    if value.startswith("["):
        host, _, rest = value[1:].partition("]")
        port = int(rest.removeprefix(":") or 53)
    elif value.count(":") == 1:
        host, raw = value.split(":")
        port = int(raw)
    return dns.nameserver.Do53Nameserver(host, port)


def resolver(servers: Sequence[str], timeout: float) -> dns.resolver.Resolver:
    """The system's resolver, or the servers named in RECOVERY_DNS_SERVERS (IP[:port])."""
    if servers:
        found = dns.resolver.Resolver(configure=False)
        found.nameservers = [_nameserver(s) for s in servers]
    else:
        found = dns.resolver.Resolver()
    found.lifetime = timeout
    return found


def txt(res: dns.resolver.Resolver, name: str) -> list[str]:
    """The TXT strings at `name` (each record's chunks joined), [] when there are none."""
    try:
        answer = res.resolve(name, "TXT")
    except (dns.resolver.NXDOMAIN, dns.resolver.NoAnswer):
        return []
    except dns.exception.DNSException as exc:
        raise DnsUnavailable(f"{exc.__class__.__name__}") from exc
    return [b"".join(r.strings).decode("utf-8", "replace") for r in answer]


def sender_domain(settings: Settings, fallback: str) -> str:
    return (settings.mail_from_address or fallback).rpartition("@")[2].lower()


def _tags(record: str) -> dict[str, str]:
    tags = {}
    for part in record.split(";"):
        key, sep, value = part.partition("=")
        if sep:
            tags[key.strip().lower()] = "".join(value.split())
    return tags


def spf(res: dns.resolver.Resolver, domain: str) -> Check:
    publish = (
        f"publish one TXT record at {domain}: v=spf1 include:<your mail provider's SPF domain> "
        "-all (the provider's setup page names the include)"
    )
    try:
        records = [r for r in txt(res, domain) if r.lower().split(" ")[0] == "v=spf1"]
    except DnsUnavailable as exc:
        return _dns_down("SPF", domain, exc)
    if not records:
        return fail(
            "SPF", f"no SPF record at {domain}: receivers cannot tell who may send", publish
        )
    if len(records) > 1:
        return fail(
            "SPF",
            f"{len(records)} SPF records at {domain}: an error to receivers (RFC 7208 4.5)",
            "merge them into one v=spf1 record",
        )
    terms = records[0].split()[1:]
    final = next((t for t in reversed(terms) if t.lstrip("+-~?").lower() == "all"), None)
    if final is not None and final.lower() in ("all", "+all"):
        return fail(
            "SPF",
            f"{domain} ends with {final}: every server on the internet may send as {domain}",
            "end the record with -all (or ~all while testing)",
        )
    if final is None and not any(t.lower().startswith("redirect=") for t in terms):
        return warn(
            "SPF",
            f"{records[0]!r} has no -all or ~all: mail from other servers is not flagged",
            "end the record with -all (or ~all while testing)",
        )
    if final is not None and final.startswith("?"):
        return warn("SPF", f"{records[0]!r} ends neutral (?all)", "end it with -all or ~all")
    return ok("SPF", f"{domain}: {records[0]}")


def dkim(res: dns.resolver.Resolver, domain: str, selector: str) -> Check:
    if not selector:
        return warn(
            "DKIM",
            "RECOVERY_DKIM_SELECTOR is not set, so the DKIM key cannot be looked up",
            "set it to the s= value of the DKIM-Signature header of a message you sent "
            "(your mail provider's DNS setup page names it)",
        )
    name = f"{selector}._domainkey.{domain}"
    publish = f"publish the DKIM public key your mail provider gives you as a TXT record at {name}"
    try:
        records = [r for r in txt(res, name) if "p=" in r.replace(" ", "")]
    except DnsUnavailable as exc:
        return _dns_down("DKIM", name, exc)
    if not records:
        return fail("DKIM", f"no DKIM key at {name}: receivers cannot verify signatures", publish)
    tags = _tags(records[0])
    if tags.get("v", "DKIM1") != "DKIM1":
        return fail("DKIM", f"{name} has v={tags['v']}, not DKIM1", publish)
    key = tags.get("p", "")
    if not key:
        return fail("DKIM", f"the key at {name} is revoked (empty p=)", publish)
    try:
        base64.b64decode(key, validate=True)
    except (binascii.Error, ValueError):
        return fail("DKIM", f"the p= of {name} is not base64", f"{publish}, copied whole")
    return ok("DKIM", f"{name}: {tags.get('k', 'rsa')} key published")


def dmarc(res: dns.resolver.Resolver, domain: str) -> Check:
    publish = (
        f"publish a TXT record at _dmarc.{domain}: v=DMARC1; p=quarantine; "
        f"rua=mailto:dmarc@{domain} (p=none first if you are unsure your mail passes)"
    )
    # Receivers fall back to the organisational domain; without the public-suffix list this
    # tries the parent, which is right for everything but names under a multi-label suffix.
    names = [f"_dmarc.{domain}"]
    if domain.count(".") >= 2:
        names.append(f"_dmarc.{domain.split('.', 1)[1]}")
    try:
        for name in names:
            records = [
                r for r in txt(res, name) if r.replace(" ", "").upper().startswith("V=DMARC1")
            ]
            if records:
                break
    except DnsUnavailable as exc:
        return _dns_down("DMARC", names[0], exc)
    if not records:
        return fail(
            "DMARC",
            f"no DMARC record for {domain}: anyone can send 'update your card' mail as {domain}",
            publish,
        )
    if len(records) > 1:
        return fail("DMARC", f"{len(records)} DMARC records at {name}", "keep exactly one")
    policy = _tags(records[0]).get("p", "").lower()
    if policy not in ("none", "quarantine", "reject"):
        return fail("DMARC", f"{name} has no valid p= ({policy or 'missing'})", publish)
    if policy == "none":
        return warn(
            "DMARC",
            f"{name}: p=none only monitors: a forged reminder from {domain} still reaches inboxes",
            "move to p=quarantine (then reject) once the reports show your own mail passes",
        )
    return ok("DMARC", f"{name}: p={policy}")


def _dns_down(name: str, where: str, exc: Exception) -> Check:
    return warn(
        name,
        f"DNS did not answer for {where} ({exc}): not checked",
        "check this machine's resolver, or point RECOVERY_DNS_SERVERS at one that answers",
    )


def mail(
    settings: Settings, sender_email: str, *, ssl_context: ssl.SSLContext | None, timeout: float
) -> list[Check]:
    checks = [smtp(settings, ssl_context=ssl_context, timeout=timeout)]
    domain = sender_domain(settings, sender_email)
    try:
        res = resolver(settings.dns_servers, timeout)
    except dns.resolver.NoResolverConfiguration:
        down = DnsUnavailable("no resolver configured")
        return [*checks, *(_dns_down(n, domain, down) for n in ("SPF", "DKIM", "DMARC"))]
    return [
        *checks,
        spf(res, domain),
        dkim(res, domain, settings.dkim_selector),
        dmarc(res, domain),
    ]
