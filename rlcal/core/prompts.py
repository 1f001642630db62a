"""Prompt templates: the paper's explicit confidence target, with t and the computed penalty filled in.

    >>> from rlcal.core.prompts import PromptTemplate
    >>> print(PromptTemplate().render("When was Ada Vell born?", 0.75))
    Answer only if you are more than 75% confident, since mistakes are penalized 3 points, while correct answers \
receive 1 point, and an answer of "I don't know" receives 0 points.
    Question: When was Ada Vell born?
    Answer:

At t = 0 the instruction is the "best guess" variant (0-1 grading). `format="chat"` gives a list of messages
(optional system prompt + user turn) for chat templates. Every string is overridable in recipes; placeholders:
`{t}` (0.75), `{t_percent}` (75%), `{penalty}` (3), `{penalty_points}` ("3 points", "1 point" at t = 0.5, "0.33
points" at t = 0.25; what the default instruction says), `{question}`, `{instruction}`. The penalty is computed as t/(1−t) (the paper prints 2 for t = 0.75; it is 3).
Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rlcal.core.thresholds import check_threshold, penalty

# Kalai et al. (2025), Section 4.2, with the penalty computed as t/(1-t) (the paper misprints t=0.75 as 2) and
# "1 point", not "1 points", at t = 0.5.
CONFIDENCE_TARGET_INSTRUCTION = (
    "Answer only if you are more than {t_percent} confident, since mistakes are penalized {penalty_points}, while "
    'correct answers receive 1 point, and an answer of "I don\'t know" receives 0 points.'
)
BEST_GUESS_INSTRUCTION = "Give your best guess: correct answers receive 1 point and anything else receives 0 points."
PLAIN_TEMPLATE = "{instruction}\nQuestion: {question}\nAnswer:"
CHAT_USER_TEMPLATE = "{instruction}\n\nQuestion: {question}\nReply with only the answer, or \"I don't know\"."
FORMATS = ("plain", "chat")


def format_number(x: float, decimals: int = 2) -> str:
    """At most `decimals` decimals, no trailing zeros: 3.0 -> "3", 1.5 -> "1.5", 9.000000000000002 -> "9",
    0.333.. -> "0.33" (format_number(1/3, 4) -> "0.3333"), 0.0 -> "0"."""
    text = f"{x:.{decimals}f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text == "-0" else text


@dataclass
class PromptTemplate:
    """How a question and its confidence target t become a prompt."""

    format: str = field(default="plain", metadata={"help": "plain (completion prompt) | chat (list of messages)."})
    instruction: str = field(default=CONFIDENCE_TARGET_INSTRUCTION, metadata={"help": "Instruction for t > 0."})
    instruction_t0: str = field(default=BEST_GUESS_INSTRUCTION, metadata={"help": "Instruction at t = 0."})
    template: str | None = field(
        default=None, metadata={"help": "Prompt (plain) or user turn (chat); defaults depend on format."}
    )
    system_prompt: str | None = field(default=None, metadata={"help": "System message for chat format."})

    def __post_init__(self) -> None:
        if self.format not in FORMATS:
            raise ValueError(f"prompt format must be one of {FORMATS}, got {self.format!r}")
        body = self.template if self.template is not None else self.default_template
        if "{question}" not in body:
            raise ValueError("prompt template must contain {question}")
        try:  # catch unknown placeholders at config time, not mid-training
            self.instruction_text(0.5)
            self.instruction_text(0.0)
            body.format(instruction="", question="", **{key: "" for key in self._fields(0.5)})
        except (KeyError, IndexError, ValueError, AttributeError) as exc:
            raise ValueError(f"prompt template has a bad placeholder: {exc!r}") from None

    @property
    def default_template(self) -> str:
        return PLAIN_TEMPLATE if self.format == "plain" else CHAT_USER_TEMPLATE

    @staticmethod
    def _fields(t: float) -> dict[str, str]:
        points = penalty(t)
        shown = format_number(points)
        return {
            "t": format_number(t),
            "t_percent": f"{format_number(100 * t)}%",
            "penalty": shown,
            "penalty_points": f"{shown} point" if shown == "1" else f"{shown} points",
        }

    def instruction_text(self, t: float) -> str:
        """The instruction for target t: the confidence-target sentence, or the best-guess one at t = 0."""
        t = check_threshold(t)
        return (self.instruction if t > 0 else self.instruction_t0).format(**self._fields(t))

    def render(self, question: str, t: float) -> str | list[dict[str, str]]:
        """The prompt for `question` at target t: a string (plain) or chat messages (chat)."""
        t = check_threshold(t)
        fields = self._fields(t)
        instruction = (self.instruction if t > 0 else self.instruction_t0).format(**fields)
        body = self.template if self.template is not None else self.default_template
        text = body.format(instruction=instruction, question=question, **fields)
        if self.format == "plain":
            return text
        messages = [{"role": "system", "content": self.system_prompt}] if self.system_prompt else []
        return messages + [{"role": "user", "content": text}]
