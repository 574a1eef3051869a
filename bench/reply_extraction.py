"""Score visible-reply extraction on the peer-replies corpus: ours next to the installed Python peers.

The corpus (``/work/shared/corpus/peer-replies``) holds seven reply-parsing libraries' own test
fixtures with what each library asserts about the visible text. Scoring follows its README exactly:
a fixture passes when the normalised output equals ``expected`` or, where that is null, contains
every ``must_contain`` and none of the ``must_not_contain`` fragments.

    .venv/bin/python bench/reply_extraction.py [--corpus DIR] [--show-failures EXTRACTOR] [--id SUBSTR]

Every peer runs inside try/except: a peer that cannot be imported or crashes on one fixture fails
that fixture (or drops out of the table) without stopping the run.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import traceback
import warnings
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from inbox_bot.mail.parse import parse_mail  # noqa: E402
from inbox_bot.rulebook import read_rule_files  # noqa: E402
from inbox_bot.triage.reply import compile_rules, extract_reply  # noqa: E402

DEFAULT_CORPUS = Path("/work/shared/corpus/peer-replies")
KINDS = ("reply", "signature", "quote")


@dataclass(frozen=True)
class Fixture:
    """One manifest row with its input decoded the way the corpus README prescribes."""

    row: dict
    text: str
    html: str

    @property
    def id(self) -> str:
        return self.row["id"]


def normalise(text: str) -> str:
    """The corpus' only normalisation: LF line ends, no trailing blanks, one blank line at most, strip."""
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    text = "\n".join(line.rstrip() for line in text.split("\n"))
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def passes(row: dict, output: str) -> bool:
    got = normalise(output)
    if row.get("expected") is not None:
        return got == normalise(row["expected"])
    frag_out = got.replace("\u00a0", " ")
    must = [f.replace("\u00a0", " ") for f in row.get("must_contain") or []]
    must_not = [f.replace("\u00a0", " ") for f in row.get("must_not_contain") or []]
    return all(f in frag_out for f in must) and not any(f in frag_out for f in must_not)


class _TextRenderer(HTMLParser):
    """The corpus bench's stdlib renderer: block elements and <br> break lines, white space collapses."""

    BLOCKS = frozenset(
        {"address", "article", "aside", "blockquote", "dd", "div", "dl", "dt", "fieldset", "figcaption", "figure"}
        | {"footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main", "nav", "ol", "p"}
        | {"pre", "section", "table", "tr", "ul"}
    )
    DROP = frozenset({"head", "script", "style", "title"})
    VOID = frozenset(
        {"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "param", "source", "track", "wbr"}
    )

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.stack: list[tuple[str, bool]] = []

    def _hidden(self) -> bool:
        return any(hidden for _, hidden in self.stack)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            if not self._hidden():
                self.parts.append("\n")
            return
        if tag in self.BLOCKS and not self._hidden():
            self.parts.append("\n")
        if tag in self.VOID:
            return
        style = (dict(attrs).get("style") or "").replace(" ", "").lower()
        self.stack.append((tag, tag in self.DROP or "display:none" in style))

    def handle_endtag(self, tag: str) -> None:
        for i in range(len(self.stack) - 1, -1, -1):
            if self.stack[i][0] == tag:
                del self.stack[i:]
                break
        if tag in self.BLOCKS and not self._hidden():
            self.parts.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden():
            self.parts.append(re.sub(r"[ \t\r\n\f]+", " ", data))

    def text(self) -> str:
        lines = [line.strip() for line in "".join(self.parts).split("\n")]
        return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    renderer = _TextRenderer()
    renderer.feed(html)
    renderer.close()
    return renderer.text()


def load_fixtures(corpus: Path) -> list[Fixture]:
    fixtures = []
    for line in (corpus / "manifest.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        row = json.loads(line)
        raw = (corpus / row["file"]).read_bytes()
        if row["format"] == "eml":
            mail = parse_mail(raw, row["file"])
            text, html = mail.text, mail.html
        elif row["format"] == "html":
            text, html = "", raw.decode("utf-8", "replace")
        else:
            text, html = raw.decode("utf-8", "replace"), ""
        fixtures.append(Fixture(row, text, html))
    return fixtures


def plain_input(fx: Fixture) -> str:
    """What a text-only library gets: the plain text, or the rendered HTML when there is none."""
    return fx.text if fx.text or not fx.html else html_to_text(fx.html)


Extractor = Callable[[Fixture], str]


def make_ours() -> Extractor:
    rules = compile_rules(read_rule_files(ROOT / "rules"))

    def run(fx: Fixture) -> str:
        return extract_reply(fx.text, fx.html, rules).text

    return run


def make_talon(with_signature: bool) -> Extractor:
    import joblib  # talon 1.4.4 imports joblib from its old sklearn home
    import sklearn.externals

    warnings.filterwarnings("ignore", message="Coercing non-XML name")  # html5lib, inside talon

    sklearn.externals.joblib = joblib  # type: ignore[attr-defined]
    sys.modules.setdefault("sklearn.externals.joblib", joblib)
    from talon import quotations
    from talon.signature import bruteforce

    def run(fx: Fixture) -> str:
        if fx.html and not fx.text:
            text = html_to_text(quotations.extract_from_html(fx.html))
        else:
            text = quotations.extract_from_plain(fx.text)
        if with_signature:
            text = bruteforce.extract_signature(text)[0]
        return text

    return run


def make_quotequail() -> Extractor:
    import quotequail

    def visible(parts: list[tuple[bool, str]]) -> str:
        return "".join(text for shown, text in parts if shown)

    def run(fx: Fixture) -> str:
        if fx.html and not fx.text:
            unwrapped = quotequail.unwrap_html(fx.html)
            if unwrapped is not None:
                return html_to_text(unwrapped.get("html_top", ""))
            return html_to_text(visible(quotequail.quote_html(fx.html)))
        unwrapped = quotequail.unwrap(fx.text)
        if unwrapped is not None:
            return unwrapped.get("text_top", "")
        return visible(quotequail.quote(fx.text))

    return run


def make_mail_parser_reply() -> Extractor:
    from mailparser_reply import EmailReplyParser
    from mailparser_reply.constants import MAIL_LANGUAGES

    parser = EmailReplyParser(languages=[lang for lang in MAIL_LANGUAGES if lang != "david"])

    def run(fx: Fixture) -> str:
        return parser.parse_reply(text=plain_input(fx))

    return run


def make_email_reply_parser() -> Extractor:
    from email_reply_parser import EmailReplyParser

    def run(fx: Fixture) -> str:
        return EmailReplyParser.parse_reply(plain_input(fx))

    return run


FACTORIES: dict[str, Callable[[], Extractor]] = {
    "ours": make_ours,
    "talon": lambda: make_talon(with_signature=False),
    "talon+sig": lambda: make_talon(with_signature=True),
    "quotequail": make_quotequail,
    "mail-parser-reply": make_mail_parser_reply,
    "email-reply-parser": make_email_reply_parser,
}


def score(fixtures: list[Fixture], name: str, extractor: Extractor) -> dict[str, bool]:
    results = {}
    for fx in fixtures:
        try:
            results[fx.id] = passes(fx.row, extractor(fx))
        except Exception:  # noqa: BLE001 - a peer crashing on one fixture only fails that fixture
            results[fx.id] = False
    return results


def print_table(fixtures: list[Fixture], names: list[str], results: dict[str, dict[str, bool]]) -> None:
    groups: dict[str, list[Fixture]] = defaultdict(list)
    for fx in fixtures:
        groups[f"{fx.row['peer']}/{fx.row['kind']}"].append(fx)
        groups[f"kind {fx.row['kind']}"].append(fx)
        groups["TOTAL"].append(fx)
    order = sorted(k for k in groups if "/" in k) + [f"kind {k}" for k in KINDS if f"kind {k}" in groups]
    order.append("TOTAL")
    width = max(len(n) for n in names) + 1
    print(f"{'group':<28}{'n':>4} " + "".join(f"{n:>{width}}" for n in names))
    for key in order:
        if key.startswith("kind") and key == order[len(order) - 1 - len(KINDS)]:
            print("-" * (33 + width * len(names)))
        members = groups[key]
        cells = "".join(f"{sum(results[n][fx.id] for fx in members):>{width}}" for n in names)
        print(f"{key:<28}{len(members):>4} {cells}")


def show_failures(fixtures: list[Fixture], extractor: Extractor, results: dict[str, bool]) -> None:
    for fx in fixtures:
        if results[fx.id]:
            continue
        row = fx.row
        try:
            got = normalise(extractor(fx))
        except Exception:  # noqa: BLE001 - show the crash instead of the output
            got = traceback.format_exc()
        print(f"=== FAIL {fx.id} [{row['kind']}, {row['language']}, {row['format']}] {row['file']}")
        if row.get("expected") is not None:
            print(f"--- expected:\n{normalise(row['expected'])}")
        else:
            print(f"--- must_contain: {row.get('must_contain')}\n--- must_not_contain: {row.get('must_not_contain')}")
        print(f"--- got:\n{got}\n")


def show_samples(corpus: Path) -> None:
    """Each labelled case's extracted reply next to its expected intent, for reading by eye."""
    from inbox_bot.triage.base import TriageContext
    from inbox_bot.triage.reply import Reply
    from inbox_bot.types import Facts

    ctx = TriageContext(rules={Reply.name: compile_rules(read_rule_files(ROOT / "rules"))})
    for line in (corpus / "labels.jsonl").read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        label = json.loads(line)
        mail = parse_mail((corpus / label["file"]).read_bytes(), label["file"])
        facts = Facts()
        Reply().run(mail, ctx, facts)
        readable = "" if facts.readable else "  [UNREADABLE]"
        print(f"=== {label['id']}  expected={label['expected_intent']}{readable}  ({label['why']})")
        print("\n".join(f"    | {text}" for text in facts.reply_text.split("\n")))
        for note in facts.cut:
            print(f"    - cut: {note}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--corpus", type=Path, default=DEFAULT_CORPUS)
    parser.add_argument("--show-failures", metavar="EXTRACTOR", help="print each failing fixture of one extractor")
    parser.add_argument("--id", default="", help="only fixtures whose id contains this")
    parser.add_argument("--only", nargs="*", help="extractors to run (default: all)")
    parser.add_argument("--samples", type=Path, metavar="CORPUS", help="print a labelled corpus' extracted replies")
    args = parser.parse_args(argv)
    if args.samples:
        show_samples(args.samples)
        return 0

    fixtures = [fx for fx in load_fixtures(args.corpus) if args.id in fx.id]
    extractors: dict[str, Extractor] = {}
    for name, factory in FACTORIES.items():
        if args.only and name not in args.only and name != args.show_failures:
            continue
        try:
            extractors[name] = factory()
        except Exception as exc:  # noqa: BLE001 - a peer that will not load is reported, not fatal
            print(f"skipping {name}: {type(exc).__name__}: {exc}", file=sys.stderr)
    results = {name: score(fixtures, name, ex) for name, ex in extractors.items()}
    print_table(fixtures, list(extractors), results)
    if args.show_failures in extractors:
        show_failures(fixtures, extractors[args.show_failures], results[args.show_failures])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
