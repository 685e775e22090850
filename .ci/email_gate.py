#!/usr/bin/env python3
"""The email quality gate (issue 12), on the .eml files that
`cargo run --example render_emails` wrote with the real mailer.

    email_gate.py check DIR              every .eml: strict MIME parse, tidy, SpamAssassin
    email_gate.py screenshots DIR OUT    one email per template, 400 px, light and dark

`check` exits 1 naming every email and every problem: a message Python's
strict email policy cannot read, an HTML part with tidy errors (warnings
such as table attributes HTML5 calls obsolete are what email HTML needs,
and pass), a SpamAssassin score above 1.0 with its local tests (-L).
Only the standard library and Debian's tidy, spamassassin and chromium.
"""

import concurrent.futures
import email
import email.policy
import os
import re
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

MAX_SPAM_SCORE = 1.0
LOCALE_ORDER = ["en", "es", "fr", "de", "pt"]


def parse_strict(data: bytes):
    """The message under policy=strict (raises on any defect), every part decoded."""
    msg = email.message_from_bytes(data, policy=email.policy.strict)
    problems = []
    for header in ["From", "To", "Subject", "Date", "Message-ID", "MIME-Version"]:
        if msg[header] is None:
            problems.append(f"no {header} header")
    texts, htmls, alternative = [], [], False
    for part in msg.walk():
        if part.defects:
            problems.append(f"{part.get_content_type()}: defects {part.defects}")
        ctype = part.get_content_type()
        if ctype == "multipart/alternative":
            kinds = [p.get_content_type() for p in part.iter_parts()]
            # The HTML may sit in a multipart/related with its inline images.
            if "text/plain" in kinds and ("text/html" in kinds or "multipart/related" in kinds):
                alternative = True
        if part.is_multipart():
            continue
        content = part.get_content()
        if ctype == "text/plain":
            texts.append(content)
        elif ctype == "text/html":
            htmls.append(content)
    if not alternative:
        problems.append("no multipart/alternative with a text and an HTML part")
    if len(texts) != 1 or len(htmls) != 1:
        problems.append(f"{len(texts)} text parts and {len(htmls)} HTML parts, expected one each")
    return msg, (texts or [""])[0], (htmls or [""])[0], problems


def tidy_errors(html: str):
    with tempfile.NamedTemporaryFile("w", suffix=".html", encoding="utf-8", delete=False) as f:
        f.write(html)
        path = f.name
    try:
        r = subprocess.run(["tidy", "-errors", "-quiet", "-utf8", path],
                           capture_output=True, text=True)
    finally:
        os.unlink(path)
    # Exit status: 0 clean, 1 warnings only, 2 errors.
    if r.returncode >= 2:
        lines = [l for l in r.stderr.splitlines() if "Error:" in l] or r.stderr.splitlines()
        return lines
    return []


def spam_score(path: Path):
    r = subprocess.run(["spamassassin", "-L", "-t"], stdin=open(path, "rb"),
                       capture_output=True)
    out = r.stdout.decode("utf-8", "replace")
    m = re.search(r"^X-Spam-Status: \w+, score=(-?[\d.]+)", out, re.M)
    if not m:
        return None, (r.stderr.decode("utf-8", "replace") or out)[-2000:]
    report = out.split("Content analysis details:", 1)[-1].strip().splitlines()[:25]
    return float(m.group(1)), "\n".join(report)


def check_one(path: Path):
    problems = []
    data = path.read_bytes()
    try:
        _, _, html, found = parse_strict(data)
        problems += found
    except Exception as e:  # the strict policy raises on the first defect
        return [f"strict MIME parse failed: {type(e).__name__}: {e}"], None
    for line in tidy_errors(html):
        problems.append(f"tidy: {line}")
    score, report = spam_score(path)
    if score is None:
        problems.append(f"spamassassin gave no score: {report}")
    elif score > MAX_SPAM_SCORE:
        problems.append(f"SpamAssassin score {score} > {MAX_SPAM_SCORE}:\n{report}")
    return problems, score


def check(folder: Path) -> int:
    emls = sorted(folder.glob("*.eml"))
    if not emls:
        print(f"no .eml files in {folder}", file=sys.stderr)
        return 1
    failed = 0
    with concurrent.futures.ThreadPoolExecutor(max_workers=max(2, os.cpu_count() or 2)) as pool:
        for path, (problems, score) in zip(emls, pool.map(check_one, emls)):
            if problems:
                failed += 1
                print(f"FAIL {path.name}")
                for p in problems:
                    print("  " + p.replace("\n", "\n    "))
            else:
                print(f"ok   {path.name}  (SpamAssassin {score})")
    print(f"{len(emls) - failed} of {len(emls)} emails pass the gate")
    return 1 if failed else 0


def png(width: int, height: int, pixel) -> bytes:
    """A greyscale PNG from pixel(x, y) -> 0..255, with the standard library only."""
    raw = b"".join(b"\0" + bytes(pixel(x, y) for x in range(width)) for y in range(height))

    def chunk(kind, body):
        c = struct.pack(">I", len(body)) + kind + body
        return c + struct.pack(">I", zlib.crc32(kind + body) & 0xFFFFFFFF)

    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def placeholder_qr() -> bytes:
    """Stands in for an inline QR code the message does not carry: 25 modules
    of 8 px with the three finder squares."""
    def pixel(x, y):
        cx, cy = x // 8, y // 8
        for fx, fy in [(0, 0), (18, 0), (0, 18)]:
            if fx <= cx < fx + 7 and fy <= cy < fy + 7:
                return 0 if max(abs(cx - fx - 3), abs(cy - fy - 3)) in (0, 1, 3) else 255
        return 0 if (cx * 31 + cy * 17 + cx * cy) % 7 < 3 else 255
    return png(200, 200, pixel)


def inline_images(msg, into: Path):
    """cid -> file for every part with a Content-ID (the inline QR code)."""
    found = {}
    for part in msg.walk():
        cid = part.get("Content-ID")
        if cid and not part.is_multipart():
            name = re.sub(r"[^A-Za-z0-9.@_-]", "_", cid.strip("<>"))
            f = into / name
            f.write_bytes(part.get_payload(decode=True))
            found[cid.strip("<>")] = f
    return found


def placeholder_logo() -> bytes:
    """Stands in for a brand's https logo (the gate has no network): a 240 x 60
    mark, dark on light, as a typical wordmark."""
    def pixel(x, y):
        if 8 <= y < 52 and 4 <= x < 52:
            return 40
        if 20 <= y < 40 and 64 <= x < 232 and (x // 12) % 3 != 2:
            return 70
        return 235
    return png(240, 60, pixel)


def chromium(args, user_data: Path):
    base = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
            "--disable-background-networking", "--disable-component-update", "--disable-sync",
            "--hide-scrollbars", f"--user-data-dir={user_data}"]
    return subprocess.run(base + args, capture_output=True, text=True, timeout=120)


def page_height(html_file: Path, user_data: Path, dark: bool) -> int:
    """The rendered height at 400 px, read back from the DOM Chromium dumps."""
    probe = html_file.with_suffix(".probe.html")
    text = html_file.read_text(encoding="utf-8")
    # --dump-dom lays the page out at least 500 px wide; pin it to 400 as the screenshot.
    script = ("<style>html{width:400px !important}</style><script>document.title='H:'+"
              "Math.ceil(document.body.getBoundingClientRect().bottom)</script>")
    probe.write_text(text.replace("</body>", script + "</body>"), encoding="utf-8")
    flags = ["--force-dark-mode"] if dark else []
    r = chromium(flags + ["--window-size=400,800", "--dump-dom", probe.as_uri()], user_data)
    probe.unlink()
    m = re.search(r"<title>H:(\d+)</title>", r.stdout)
    return min(int(m.group(1)), 6000) if m else 1600


def screenshots(folder: Path, out: Path) -> int:
    out.mkdir(parents=True, exist_ok=True)
    by_template = {}
    for path in sorted(folder.glob("*.eml")):
        template, locale = path.name[: -len(".eml")].rsplit(".", 1)
        if "+" not in template:
            by_template.setdefault(template, {})[locale] = path
    if not by_template:
        print(f"no .eml files in {folder}", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="email-shots-"))
    made = 0
    try:
        for i, (template, locales) in enumerate(sorted(by_template.items())):
            # One email per template, the languages taking turns.
            order = LOCALE_ORDER[i % len(LOCALE_ORDER):] + LOCALE_ORDER[: i % len(LOCALE_ORDER)]
            locale = next((l for l in order if l in locales), sorted(locales)[0])
            msg = email.message_from_bytes(locales[locale].read_bytes(), policy=email.policy.default)
            html = next(p.get_content() for p in msg.walk() if p.get_content_type() == "text/html")
            images = inline_images(msg, work)
            for src in set(re.findall(r'src="cid:([^"]+)"', html)):
                f = images.get(src)
                if f is None:
                    f = work / "placeholder-qr.png"
                    f.write_bytes(placeholder_qr())
                html = html.replace(f'src="cid:{src}"', f'src="{f.as_uri()}"')
            # Remote images (a brand's logo) cannot load here: a local stand-in.
            if re.search(r'src="https?://', html):
                logo = work / "placeholder-logo.png"
                logo.write_bytes(placeholder_logo())
                html = re.sub(r'src="https?://[^"]*"', f'src="{logo.as_uri()}"', html)
            page = work / f"{template}.{locale}.html"
            page.write_text(html, encoding="utf-8")
            for scheme in ["light", "dark"]:
                dark = scheme == "dark"
                user_data = Path(tempfile.mkdtemp(prefix="chromium-", dir=work))
                height = page_height(page, user_data, dark)
                shot = out / f"{template}.{locale}.{scheme}.png"
                flags = ["--force-dark-mode"] if dark else []
                r = chromium(flags + [f"--window-size=400,{height}", f"--screenshot={shot}", page.as_uri()],
                             user_data)
                if r.returncode != 0 or not shot.exists():
                    print(f"FAIL screenshot {shot.name}: {r.stderr[-500:]}", file=sys.stderr)
                    return 1
                made += 1
                print(f"screenshot {shot}")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"{made} screenshots in {out}")
    return 0


def main(argv):
    if len(argv) == 3 and argv[1] == "check":
        return check(Path(argv[2]))
    if len(argv) == 4 and argv[1] == "screenshots":
        return screenshots(Path(argv[2]), Path(argv[3]))
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
