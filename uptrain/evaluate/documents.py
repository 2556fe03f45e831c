"""What lm-evaluation-harness's rolling-loglikelihood tasks score, document by document.

A harness document has the text that is scored and the text whose words and bytes are counted. With
no treatment they are the same string. With the `wikitext` treatment (lm_eval's `wikitext` task) the
scored text is the page after the task's detokenizer (`wikitext_detokenize`, a copy of
lm_eval/tasks/wikitext/preprocess_wikitext.py's `wikitext_detokenizer`, tested equal to it) and the
words and bytes are counted on the original page, as the task's `process_results` does.

`wikitext_articles` cuts WikiText's raw text into articles at its top-level headings (` = Title = `),
one document per article, the unit of lm_eval's `EleutherAI/wikitext_document_level` pages.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from uptrain.errors import UptrainError

TREATMENTS = ("none", "wikitext")
_HEADING = re.compile(r"^ = [^=].* = ?$")


@dataclass(frozen=True)
class HarnessDocument:
    scored: str  # what the model reads
    original: str  # what words and bytes are counted on


def wikitext_detokenize(page: str) -> str:
    """lm_eval's wikitext_detokenizer (tasks/wikitext/preprocess_wikitext.py), step for step."""
    string = page
    string = string.replace("s '", "s'")
    string = re.sub(r"/' [0-9]/", r"/'[0-9]/", string)
    string = string.replace(" @-@ ", "-")
    string = string.replace(" @,@ ", ",")
    string = string.replace(" @.@ ", ".")
    for mark in (":", ";", ".", "!", "?", ","):
        string = string.replace(f" {mark} ", f"{mark} ")
    string = re.sub(r"\(\s*([^\)]*?)\s*\)", r"(\1)", string)
    string = re.sub(r"\[\s*([^\]]*?)\s*\]", r"[\1]", string)
    string = re.sub(r"{\s*([^}]*?)\s*}", r"{\1}", string)
    string = re.sub(r"\"\s*([^\"]*?)\s*\"", r'"\1"', string)
    string = re.sub(r"'\s*([^']*?)\s*'", r"'\1'", string)
    string = string.replace("= = = =", "====")
    string = string.replace("= = =", "===")
    string = string.replace("= =", "==")
    string = string.replace(" " + chr(176) + " ", chr(176))
    string = string.replace(" \n", "\n")
    string = string.replace("\n ", "\n")
    string = string.replace(" N ", " 1 ")
    string = string.replace(" 's", "'s")
    return string


def check_treatment(treatment: str) -> None:
    if treatment not in TREATMENTS:
        raise UptrainError(f"--detokenize {treatment!r} is not known; use one of {', '.join(TREATMENTS)}")


def harness_documents(documents: Sequence[str], treatment: str = "none") -> list[HarnessDocument]:
    """The documents as the harness sees them. Rows with no text other than whitespace are left out:
    the harness would score no tokens for them yet count a word, which says nothing about the model."""
    check_treatment(treatment)
    kept = [d for d in documents if d.strip()]
    if not kept:
        raise UptrainError("the text is empty; point --dataset at a file or split with text in it")
    if treatment == "wikitext":
        return [HarnessDocument(wikitext_detokenize(d), d) for d in kept]
    return [HarnessDocument(d, d) for d in kept]


def documents_within(documents: Sequence[str], covered: str, separator: str) -> list[str]:
    """The documents, in order, cut to the first len(covered) characters of their joined text (what
    --max-tokens keeps): whole documents, then the covered start of the one the cut falls in."""
    kept: list[str] = []
    remaining = len(covered)
    for document in documents:
        if remaining <= 0:
            break
        kept.append(document[:remaining])
        remaining -= len(document) + len(separator)
    return kept


def wikitext_articles(text: str) -> list[str]:
    """WikiText raw text cut at its top-level headings (` = Title = ` lines): one string per article,
    its heading line first. Text before the first heading is an article of its own."""
    articles: list[str] = []
    current: list[str] = []
    for line in text.replace("\r\n", "\n").splitlines(keepends=True):
        if _HEADING.match(line.rstrip("\n")) and any(part.strip() for part in current):
            articles.append("".join(current))
            current = []
        current.append(line)
    if any(part.strip() for part in current):
        articles.append("".join(current))
    return articles
