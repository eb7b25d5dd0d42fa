"""Ollama Modelfile ``TEMPLATE`` (Go ``text/template`` syntax) -> a Jinja template we can sandbox.

The common subset Ollama's docs and model templates use:

    {{ .System }} {{ .Prompt }} {{ .Response }}            variables (dot = the data)
    {{ if .System }}...{{ else if .Prompt }}...{{ else }}...{{ end }}
    {{ range .Messages }}{{ .Role }}: {{ .Content }}{{ end }}   dot = the current message
    {{ range $i, $m := .Messages }}{{ $m.Content }}{{ $.System }}{{ end }}
    {{ with .System }}{{ . }}{{ end }}     {{ $x := .Prompt }}     {{/* comment */}}
    {{- trims whitespace before,  -}} after
    functions: eq ne lt le gt ge and or not len index slice json, and pipes: {{ .X | json }}

Translation keeps every literal text out of Jinja's lexer (they go in as ``_lit[i]``),
so template text such as "{%" stays literal, and renders without Jinja's whitespace
options: the output is exactly what Go would print for these forms.

How messages feed the template (as Ollama does): a template that reads ``.Messages``
is rendered once. An older one (``.System``/``.Prompt``/``.Response`` only) is rendered
once per turn -- system, user prompt, assistant response -- and the pieces concatenated;
in the last turn, text after ``{{ .Response }}`` is cut off so the model writes it (and
continues a final assistant message, which fills ``.Response``).
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

from refllm.tokenizer.chat import ChatTemplateError, compile_template, normalize_messages, render_bounded

_ACTION = re.compile(r"\{\{(-\s)?(.*?)(\s-)?\}\}", re.DOTALL)
_TOKEN = re.compile(
    r"""\s*(?:
        (?P<string>"(?:[^"\\]|\\.)*")
      | (?P<raw>`[^`]*`)
      | (?P<number>-?\d+(?:\.\d+)?)
      | (?P<var>\$[A-Za-z_0-9]*(?:\.[A-Za-z_][A-Za-z_0-9]*)*)
      | (?P<field>(?:\.[A-Za-z_][A-Za-z_0-9]*)+|\.)
      | (?P<ident>[A-Za-z_][A-Za-z_0-9]*)
      | (?P<punct>:=|[(),|=])
    )""",
    re.VERBOSE,
)


@dataclass
class _Block:
    kind: str  # "if", "range", "with"
    dot: str  # the Jinja expression "." means inside this block
    dropped: bool = False  # opened after the cut at {{ .Response }}: left out whole


@dataclass
class _Translator:
    cut_at_response: bool = False  # Ollama's last turn: drop everything after {{ .Response }}
    literals: list[str] = field(default_factory=list)
    out: list[str] = field(default_factory=list)
    blocks: list[_Block] = field(default_factory=list)
    counter: int = 0
    cutting: bool = False  # past the {{ .Response }} action
    prints_response: bool = False  # some action prints .Response

    @property
    def dot(self) -> str:
        return self.blocks[-1].dot if self.blocks else "_root"

    def literal(self, text: str) -> None:
        if text and not self.cutting:
            self.literals.append(text)
            self.out.append("{{ _lit[%d] }}" % (len(self.literals) - 1))

    # ---------------------------------------------------------------- expressions

    def expression(self, tokens: list[tuple[str, str]]) -> str:
        """A pipeline: command ('|' command)*; each later command gets the previous value as last argument."""
        commands: list[list[tuple[str, str]]] = [[]]
        depth = 0
        for token in tokens:
            if token == ("punct", "(") or token == ("punct", ")"):
                depth += 1 if token[1] == "(" else -1
            if token == ("punct", "|") and depth == 0:
                commands.append([])
            else:
                commands[-1].append(token)
        value = None
        for command in commands:
            value = self.command(command, piped=value)
        return value

    def command(self, tokens: list[tuple[str, str]], piped: str | None) -> str:
        if not tokens:
            raise ChatTemplateError("Go template: empty expression")
        kind, name = tokens[0]
        if kind == "ident" and name in _FUNCTIONS:
            args = self.operands(tokens[1:]) + ([piped] if piped is not None else [])
            minimum, translate = _FUNCTIONS[name]
            if len(args) < minimum:
                raise ChatTemplateError(f"Go template: '{name}' needs {minimum} argument(s)")
            return translate(args)
        if kind == "ident" and name not in ("true", "false", "nil"):
            raise ChatTemplateError(f"Go template: function '{name}' is not supported")
        operands = self.operands(tokens)
        if len(operands) != 1 or piped is not None:
            raise ChatTemplateError("Go template: cannot call a value with arguments")
        return operands[0]

    def operands(self, tokens: list[tuple[str, str]]) -> list[str]:
        values, i = [], 0
        while i < len(tokens):
            kind, text = tokens[i]
            if (kind, text) == ("punct", "("):
                depth, j = 1, i + 1
                while j < len(tokens) and depth:
                    depth += {"(": 1, ")": -1}.get(tokens[j][1], 0) if tokens[j][0] == "punct" else 0
                    j += 1
                if depth:
                    raise ChatTemplateError("Go template: unbalanced parentheses")
                values.append("(" + self.expression(tokens[i + 1 : j - 1]) + ")")
                i = j
                continue
            values.append(self.operand(kind, text))
            i += 1
        return values

    def operand(self, kind: str, text: str) -> str:
        if kind == "string":
            return json.dumps(json.loads(text))
        if kind == "raw":
            return json.dumps(text[1:-1])
        if kind == "number":
            return text
        if kind == "field":
            return self.dot if text == "." else self.dot + "".join(f"[{json.dumps(p)}]" for p in text[1:].split("."))
        if kind == "var":
            name, *path = text.split(".")
            base = "_root" if name == "$" else "v_" + name[1:]
            return base + "".join(f"[{json.dumps(p)}]" for p in path)
        if kind == "ident" and text in ("true", "false", "nil"):
            return {"true": "true", "false": "false", "nil": "none"}[text]
        raise ChatTemplateError(f"Go template: unexpected '{text}'")

    # ---------------------------------------------------------------- actions

    def action(self, body: str) -> None:
        body = body.strip()
        if body.startswith("/*"):
            return  # comment
        tokens = _tokenize(body)
        head = tokens[0][1] if tokens and tokens[0][0] == "ident" else None
        if head in ("if", "range", "with") and self.cutting:
            self.blocks.append(_Block(head, self.dot, dropped=True))
        elif head == "if":
            self.out.append("{%% if %s %%}" % self.expression(tokens[1:]))
            self.blocks.append(_Block("if", self.dot))
        elif head == "range":
            self.range(tokens[1:])
        elif head == "with":
            self.counter += 1
            name = f"_with{self.counter}"
            self.out.append("{%% set %s = %s %%}{%% if %s %%}" % (name, self.expression(tokens[1:]), name))
            self.blocks.append(_Block("with", name))
        elif head == "else":
            if not self.blocks:
                raise ChatTemplateError("Go template: 'else' outside if/range/with")
            if self.cutting:
                return  # Ollama empties the else branches after the cut
            if len(tokens) > 1 and tokens[1] == ("ident", "if"):
                self.out.append("{%% elif %s %%}" % self.expression(tokens[2:]))
            else:
                self.out.append("{% else %}")
        elif head == "end":
            if not self.blocks:
                raise ChatTemplateError("Go template: 'end' without if/range/with")
            block = self.blocks.pop()
            if not block.dropped:
                self.out.append("{% endfor %}" if block.kind == "range" else "{% endif %}")
        elif head in ("define", "template", "block", "break", "continue"):
            raise ChatTemplateError(f"Go template: '{head}' is not supported")
        else:  # an action that prints (or assigns) a value
            if self.cutting:
                return
            if len(tokens) >= 2 and tokens[0][0] == "var" and tokens[1] == ("punct", ":="):
                self.out.append("{%% set v_%s = %s %%}" % (tokens[0][1][1:], self.expression(tokens[2:])))
            else:
                self.out.append("{{ %s }}" % self.expression(tokens))
            if any(kind == "field" and "Response" in text.split(".") for kind, text in tokens):
                self.prints_response = True
                self.cutting = self.cut_at_response

    def range(self, tokens: list[tuple[str, str]]) -> None:
        self.counter += 1
        index_var, item_var = None, f"_item{self.counter}"
        if ("punct", ":=") in tokens:
            split = tokens.index(("punct", ":="))
            names = [t[1][1:] for t in tokens[:split] if t[0] == "var"]
            if len(names) == 2:
                index_var, item_var = "v_" + names[0], "v_" + names[1]
            elif len(names) == 1:
                item_var = "v_" + names[0]
            else:
                raise ChatTemplateError("Go template: bad range variables")
            tokens = tokens[split + 1 :]
        self.out.append("{%% for %s in %s %%}" % (item_var, self.expression(tokens)))
        if index_var:
            self.out.append("{%% set %s = loop.index0 %%}" % index_var)
        self.blocks.append(_Block("range", item_var))


def _tokenize(body: str) -> list[tuple[str, str]]:
    tokens, pos = [], 0
    while pos < len(body):
        if body[pos:].strip() == "":
            break
        match = _TOKEN.match(body, pos)
        if not match or match.end() == pos:
            raise ChatTemplateError(f"Go template: cannot read '{body[pos:pos + 20]}'")
        tokens.append((match.lastgroup, match.group(match.lastgroup)))
        pos = match.end()
    return tokens


# Go's builtin functions -> Jinja expressions; each gets its (already translated) arguments.
def _go_eq(a):  # eq x y z: x == y or x == z
    return "(" + " or ".join(f"{a[0]} == {other}" for other in a[1:]) + ")"


def _go_slice(a):  # slice x i j: x[i:j]
    return f"{a[0]}[{a[1] if len(a) > 1 else ''}:{a[2] if len(a) > 2 else ''}]"


_FUNCTIONS = {  # name -> (minimum number of arguments, translation)
    "eq": (2, _go_eq),
    "ne": (2, lambda a: f"({a[0]} != {a[1]})"),
    "lt": (2, lambda a: f"({a[0]} < {a[1]})"),
    "le": (2, lambda a: f"({a[0]} <= {a[1]})"),
    "gt": (2, lambda a: f"({a[0]} > {a[1]})"),
    "ge": (2, lambda a: f"({a[0]} >= {a[1]})"),
    "and": (1, lambda a: "(" + " and ".join(a) + ")"),
    "or": (1, lambda a: "(" + " or ".join(a) + ")"),
    "not": (1, lambda a: f"(not {a[0]})"),
    "len": (1, lambda a: f"({a[0]} | length)"),
    "index": (2, lambda a: a[0] + "".join(f"[{i}]" for i in a[1:])),
    "slice": (1, _go_slice),
    "json": (1, lambda a: f"({a[0]} | tojson)"),
}


def go_to_jinja(source: str, cut_at_response: bool = False) -> tuple[str, list[str]]:
    """Translate a Go template; returns (Jinja source, literal texts it refers to as _lit[i]).

    As Ollama does, a template that never prints ``.Response`` gets ``{{ .Response }}``
    appended; with ``cut_at_response`` everything after that action is left out.
    """
    if not isinstance(source, str):
        raise ChatTemplateError(f"template must be text, got {type(source).__name__}")
    translator = _Translator(cut_at_response=cut_at_response)
    pos, trim_next = 0, False
    for match in _ACTION.finditer(source):
        text = source[pos : match.start()]
        if trim_next:
            text = text.lstrip()
        if match.group(1):
            text = text.rstrip()
        translator.literal(text)
        translator.action(match.group(2))
        trim_next = bool(match.group(3))
        pos = match.end()
    tail = source[pos:]
    if "{{" in tail:
        raise ChatTemplateError("Go template: unclosed '{{'")
    translator.literal(tail.lstrip() if trim_next else tail)
    if translator.blocks:
        raise ChatTemplateError(f"Go template: missing {{{{ end }}}} for '{translator.blocks[-1].kind}'")
    if not translator.prints_response:
        translator.action(".Response")
    return "".join(translator.out), translator.literals


class GoChatTemplate:
    """A Modelfile TEMPLATE (or the raw ``{{ .Prompt }}``) with ChatTemplate's ``render``.

    Rendering follows Ollama's ``template.Execute``: messages are collated first (consecutive
    messages of one role joined by a blank line, all system texts joined into .System).
    """

    def __init__(self, source: str, name: str = "modelfile"):
        self.source, self.name = source, name
        full_source, self._literals = go_to_jinja(source)
        cut_source, self._cut_literals = go_to_jinja(source, cut_at_response=True)
        self._full = compile_template(full_source, hf_whitespace=False)
        self._cut = compile_template(cut_source, hf_whitespace=False)
        self.uses_messages = ".Messages" in source

    def _execute(self, data: dict, cut: bool = False) -> str:
        if cut:
            return render_bounded(self._cut, {"_root": data, "_lit": self._cut_literals})
        return render_bounded(self._full, {"_root": data, "_lit": self._literals})

    def render(self, messages: list[dict], tools: list[dict] | None = None, add_generation_prompt: bool = True,
               continue_final_message: bool = False, **extra) -> str:
        """``continue_final_message`` changes nothing here: as in Ollama, a final assistant message is
        continued by the template itself (a ``.Messages`` template leaves its last turn open, as
        Ollama's do with ``$last``; an older one is cut right after ``{{ .Response }}``)."""
        system, messages = _collate(normalize_messages(messages))
        if self.uses_messages:
            data = {"System": system, "Messages": [_go_message(m) for m in messages], "Tools": tools or [],
                    "Response": ""}
            return self._execute(data)
        return self._render_turns(messages, add_generation_prompt)

    def _render_turns(self, messages: list[dict], add_generation_prompt: bool) -> str:
        """Templates without .Messages: one execution per system/prompt/response turn."""
        out: list[str] = []
        turn = {"System": "", "Prompt": "", "Response": ""}
        for message in messages:
            role, content = message["role"], message["content"]
            if role == "system":
                if turn["Prompt"] or turn["Response"]:
                    out.append(self._execute(turn))
                    turn = {"System": "", "Prompt": "", "Response": ""}
                turn["System"] = content
            elif role == "user":
                if turn["Response"]:
                    out.append(self._execute(turn))
                    turn = {"System": "", "Prompt": "", "Response": ""}
                turn["Prompt"] = content
            elif role == "assistant":
                turn["Response"] = content
            # other roles (tool results) have no place in these templates; Ollama skips them too
        # the last turn stops right after {{ .Response }}: the model writes what comes next
        out.append(self._execute(turn, cut=add_generation_prompt))
        return "".join(out)


def _collate(messages: list[dict]) -> tuple[str, list[dict]]:
    """Ollama's collate: all system texts joined; consecutive same-role messages merged (not tool results)."""
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    collated: list[dict] = []
    for message in messages:
        if collated and collated[-1]["role"] == message["role"] and message["role"] != "tool":
            collated[-1] = dict(collated[-1], content=collated[-1]["content"] + "\n\n" + message["content"])
        else:
            collated.append(message)
    return system, collated


def _go_message(message: dict) -> dict:
    out = {"Role": message["role"], "Content": message["content"]}
    if message.get("tool_calls"):
        out["ToolCalls"] = [{"Function": {"Name": c["function"].get("name", ""), "Arguments": c["function"].get("arguments", {})}}
                            for c in message["tool_calls"]]
    if "thinking" in message:
        out["Thinking"] = message["thinking"]
    return out
