"""Read a C litmus test in herd7's syntax.

The file is ``C <name>``, an optional header comment ``(* ... *)`` (its
``Result:`` line is the expected verdict), the initial state ``{ ... }``, the
processes ``P<n>(<params>) { <C body> }`` and the final clause: ``locations
[...]``, ``filter <prop>``, then ``exists``/``~exists``/``forall`` ``<prop>``.
Anything outside the subset pervma models raises :class:`LitmusError` with the
line and the construct, never a traceback.
"""

from __future__ import annotations

import re

from pervma.litmus.syntax import (
    And,
    Assign,
    Atom,
    Binary,
    Block,
    Call,
    Const,
    Decl,
    Expr,
    ExprStmt,
    If,
    Implies,
    Key,
    Litmus,
    LitmusError,
    Loc,
    Name,
    Not,
    Num,
    Or,
    Process,
    Prop,
    Stmt,
    Unary,
    Value,
)

TYPE_WORDS = frozenset({
    "int", "long", "unsigned", "signed", "short", "char", "void", "const", "volatile",
    "bool", "_Bool", "intptr_t", "uintptr_t", "size_t", "spinlock_t", "atomic_t",
    "atomic_long_t", "u8", "u16", "u32", "u64", "s8", "s16", "s32", "s64", "struct",
})
UNSUPPORTED_WORDS = frozenset({
    "while", "for", "do", "switch", "case", "goto", "return", "break", "continue",
    "sizeof", "typedef", "enum", "union",
})

_C_TOKEN = re.compile(r"""
    (?P<ws>[ \t\r\f\v]+|\n)
  | (?P<comment>//[^\n]*|/\*.*?\*/)
  | (?P<num>0[xX][0-9a-fA-F]+|\d+)
  | (?P<id>[A-Za-z_]\w*)
  | (?P<op>==|!=|<=|>=|&&|\|\||<<|>>|->|\+\+|--|[-+*/%&|^]=|[-+*/%&|^~!<>=(){}\[\];,.?:])
""", re.VERBOSE | re.DOTALL)

_BINARY_PREC = {
    "||": 1, "&&": 2, "|": 3, "^": 4, "&": 5, "==": 6, "!=": 6,
    "<": 7, ">": 7, "<=": 7, ">=": 7, "<<": 8, ">>": 8, "+": 9, "-": 9,
    "*": 10, "/": 10, "%": 10,
}


def _quote(text: str, limit: int = 60) -> str:
    """User text for a one-line message: whitespace collapsed, long text cut."""
    one = " ".join(text.split())
    return one if len(one) <= limit else one[:limit - 3] + "..."


def _c_int(s: str, line: int) -> int:
    """A C integer literal: decimal, 0x hexadecimal or 0 octal."""
    neg = s.startswith("-")
    body = s[1:] if neg else s
    try:
        if body[:2] in ("0x", "0X"):
            v = int(body, 16)
        elif len(body) > 1 and body.startswith("0"):
            v = int(body, 8)
        else:
            v = int(body, 10)
    except ValueError:
        raise LitmusError(f"line {line}: bad integer literal '{_quote(s)}'") from None
    return -v if neg else v


def _ocaml_comments(text: str, line0: int, where: str) -> str:
    """Blank out herd's ``(* ... *)`` comments (they nest), keeping newlines."""
    out = []
    depth = 0
    i = 0
    while i < len(text):
        two = text[i:i + 2]
        if two == "(*":
            depth += 1
            out.append("  ")
            i += 2
        elif two == "*)" and depth:
            depth -= 1
            out.append("  ")
            i += 2
        else:
            ch = text[i]
            out.append(ch if depth == 0 or ch == "\n" else " ")
            i += 1
    if depth:
        raise LitmusError(f"line {line0}: unterminated '(*' comment in the {where}")
    return "".join(out)


class _Tokens:
    """The C tokens of one process body, with a cursor."""

    def __init__(self, text: str, line0: int) -> None:
        self.toks: list[tuple[str, str, int]] = []
        line = line0
        pos = 0
        while pos < len(text):
            m = _C_TOKEN.match(text, pos)
            if m is None:
                raise LitmusError(f"line {line}: unexpected character {text[pos]!r}")
            kind = m.lastgroup or ""
            s = m.group()
            if kind == "id" or kind == "num" or kind == "op":
                self.toks.append((kind, s, line))
            line += s.count("\n")
            pos = m.end()
        self.i = 0
        self.last_line = line

    def peek(self, k: int = 0) -> str:
        j = self.i + k
        return self.toks[j][1] if j < len(self.toks) else ""

    def kind(self, k: int = 0) -> str:
        j = self.i + k
        return self.toks[j][0] if j < len(self.toks) else ""

    def line(self) -> int:
        return self.toks[self.i][2] if self.i < len(self.toks) else self.last_line

    def next(self) -> str:
        if self.i >= len(self.toks):
            raise LitmusError(f"line {self.last_line}: unexpected end of process body")
        s = self.toks[self.i][1]
        self.i += 1
        return s

    def expect(self, s: str) -> None:
        got = self.peek()
        if got != s:
            raise LitmusError(f"line {self.line()}: expected '{s}', found "
                              f"'{got or 'end of input'}'")
        self.i += 1


def _is_type_start(t: _Tokens) -> bool:
    s = t.peek()
    if t.kind() != "id":
        return False
    if s in TYPE_WORDS:
        return True
    return s.endswith("_t") and (t.kind(1) == "id" or t.peek(1) == "*")


def _skip_type(t: _Tokens) -> None:
    while t.kind() == "id" and (t.peek() in TYPE_WORDS or t.peek().endswith("_t")):
        if t.next() == "struct":
            if t.kind() != "id":
                raise LitmusError(f"line {t.line()}: expected a struct tag")
            t.next()


def _unsupported(t: _Tokens, what: str) -> LitmusError:
    return LitmusError(f"line {t.line()}: unsupported construct '{what}'")


def _parse_stmt(t: _Tokens) -> Stmt:
    line = t.line()
    s = t.peek()
    if s == "{":
        return _parse_block(t)
    if s == ";":
        t.next()
        return Block((), line)
    if s == "if":
        t.next()
        t.expect("(")
        cond = _parse_expr(t)
        t.expect(")")
        then = _parse_stmt(t)
        orelse = None
        if t.peek() == "else":
            t.next()
            orelse = _parse_stmt(t)
        return If(cond, then, orelse, line)
    if s in UNSUPPORTED_WORDS or s == "else":
        raise _unsupported(t, s)
    if _is_type_start(t):
        _skip_type(t)
        decls: list[Stmt] = []
        while True:
            while t.peek() == "*":
                t.next()
            if t.kind() != "id":
                raise LitmusError(f"line {t.line()}: expected a variable name, found "
                                  f"'{t.peek() or 'end of input'}'")
            name = t.next()
            if t.peek() == "[":
                raise _unsupported(t, "array")
            init = None
            if t.peek() == "=":
                t.next()
                init = _parse_expr(t)
            decls.append(Decl(name, init, line))
            if t.peek() == ",":
                t.next()
                continue
            t.expect(";")
            break
        return decls[0] if len(decls) == 1 else Block(tuple(decls), line)
    e = _parse_expr(t)
    t.expect(";")
    return ExprStmt(e, line)


def _parse_block(t: _Tokens) -> Block:
    line = t.line()
    t.expect("{")
    body = []
    while t.peek() != "}":
        if not t.peek():
            raise LitmusError(f"line {t.last_line}: missing '}}' at the end of a block")
        body.append(_parse_stmt(t))
    t.expect("}")
    return Block(tuple(body), line)


def _parse_expr(t: _Tokens) -> Expr:
    line = t.line()
    lhs = _parse_binary(t, 1)
    op = t.peek()
    if op == "=":
        t.next()
        return Assign(lhs, _parse_expr(t), line)
    if op in ("+=", "-=", "*=", "/=", "%=", "&=", "|=", "^=", "?", "++", "--"):
        raise _unsupported(t, op)
    return lhs


def _parse_binary(t: _Tokens, min_prec: int) -> Expr:
    left = _parse_unary(t)
    while True:
        op = t.peek()
        prec = _BINARY_PREC.get(op) if t.kind() == "op" else None
        if prec is None or prec < min_prec:
            return left
        line = t.line()
        t.next()
        right = _parse_binary(t, prec + 1)
        left = Binary(op, left, right, line)


def _parse_unary(t: _Tokens) -> Expr:
    line = t.line()
    s = t.peek()
    if s in ("!", "-", "~", "*", "&") and t.kind() == "op":
        t.next()
        return Unary(s, _parse_unary(t), line)
    if s == "+" and t.kind() == "op":
        t.next()
        return _parse_unary(t)
    if s in ("++", "--"):
        raise _unsupported(t, s)
    e = _parse_primary(t)
    if t.peek() in ("[", ".", "->", "++", "--"):
        raise _unsupported(t, t.peek())
    return e


def _parse_primary(t: _Tokens) -> Expr:
    line = t.line()
    kind, s = t.kind(), t.peek()
    if kind == "num":
        t.next()
        return Num(_c_int(s, line), line)
    if kind == "id":
        if s in UNSUPPORTED_WORDS:
            raise _unsupported(t, s)
        t.next()
        if t.peek() == "(":
            t.next()
            args: list[Expr] = []
            if t.peek() != ")":
                while True:
                    args.append(_parse_expr(t))
                    if t.peek() == ",":
                        t.next()
                        continue
                    break
            t.expect(")")
            return Call(s, tuple(args), line)
        return Name(s, line)
    if s == "(":
        t.next()
        if _is_type_start(t):  # a cast: the value is unchanged
            _skip_type(t)
            while t.peek() == "*":
                t.next()
            t.expect(")")
            return _parse_unary(t)
        e = _parse_expr(t)
        t.expect(")")
        return e
    raise LitmusError(f"line {line}: unexpected '{s or 'end of input'}' in an expression")


# ---- initial state, processes, final clause -------------------------------------

_INIT_ENTRY = re.compile(
    r"^(?:(?P<type>(?:[A-Za-z_]\w*\s+|\*\s*)*?)\s*(?P<stars>\**)\s*)"
    r"(?:(?P<tid>\d+|P\d+):)?(?P<name>[A-Za-z_]\w*)\s*(?P<arr>\[[^\]]*\])?"
    r"\s*(?:=\s*(?P<value>.+?))?\s*$", re.DOTALL)


def _init_value(s: str, line: int) -> Value:
    s = s.strip()
    if re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", s):
        return _c_int(s, line)
    m = re.fullmatch(r"ATOMIC(?:64|_LONG)?_INIT\s*\(\s*(-?(?:0[xX][0-9a-fA-F]+|\d+))\s*\)", s)
    if m:
        return _c_int(m.group(1), line)
    m = re.fullmatch(r"&?\s*([A-Za-z_]\w*)", s)
    if m:
        return Loc(m.group(1))
    raise LitmusError(f"line {line}: unsupported initial value '{_quote(s)}'")


def _parse_init(body: str, line0: int, lit: Litmus) -> None:
    # C and OCaml comments (herd7 takes both here), keeping the line count
    body = re.sub(r"//[^\n]*|/\*.*?\*/|\(\*.*?\*\)",
                  lambda m: " " + "\n" * m.group(0).count("\n"), body, flags=re.DOTALL)
    line = line0
    for entry in body.split(";"):
        here = line
        line += entry.count("\n")
        e = entry.strip()
        if not e:
            continue
        m = _INIT_ENTRY.match(e)
        if m is None:
            raise LitmusError(f"line {here}: cannot parse the initial-state entry "
                              f"'{_quote(e)}'")
        if m.group("arr"):
            raise LitmusError(f"line {here}: unsupported construct 'array' in the "
                              "initial state")
        value = _init_value(m.group("value"), here) if m.group("value") else None
        tid = m.group("tid")
        name = m.group("name")
        if tid is not None:
            n = int(tid.lstrip("P"))
            lit.init_regs[(n, name)] = 0 if value is None else value
        else:
            lit.init_mem[name] = 0 if value is None else value


_GAP = r"(?:\s|//[^\n]*|/\*.*?\*/|\(\*.*?\*\))*"
_PROC_HEAD = re.compile(_GAP + r"P(\d+)\s*\(([^)]*)\)" + _GAP + r"\{", re.DOTALL)


def _matching_brace(text: str, start: int, line: int) -> int:
    """Index just past the '}' matching the '{' at ``start`` (C comments skipped)."""
    depth = 0
    i = start
    while i < len(text):
        if text.startswith("//", i):
            j = text.find("\n", i)
            i = len(text) if j < 0 else j
            continue
        if text.startswith("/*", i):
            j = text.find("*/", i + 2)
            if j < 0:
                break
            i = j + 2
            continue
        ch = text[i]
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i + 1
        i += 1
    raise LitmusError(f"line {line}: missing '}}'")


_PROP_TOKEN = re.compile(
    r"\s*(/\\|\\/|==>|==|!=|=|~|\(|\)|\[|\]|;|\d+:[A-Za-z_]\w*|-?(?:0[xX][0-9a-fA-F]+|\d+)"
    r"|[A-Za-z_]\w*|\S)")


class _PropParser:
    def __init__(self, text: str, line: int) -> None:
        self.toks = [m.group(1) for m in _PROP_TOKEN.finditer(text) if m.group(1)]
        self.i = 0
        self.line = line

    def peek(self) -> str:
        return self.toks[self.i] if self.i < len(self.toks) else ""

    def next(self) -> str:
        s = self.peek()
        if not s:
            raise LitmusError(f"line {self.line}: unexpected end of the final condition")
        self.i += 1
        return s

    def expect(self, s: str) -> None:
        if self.next() != s:
            raise LitmusError(f"line {self.line}: expected '{s}' in the final condition")

    def key(self) -> Key:
        s = self.next()
        if re.fullmatch(r"\d+:[A-Za-z_]\w*", s):
            tid, reg = s.split(":")
            return ("reg", int(tid), reg)
        if re.fullmatch(r"[A-Za-z_]\w*", s):
            return ("loc", s)
        raise LitmusError(f"line {self.line}: unsupported construct '{s}' in the final "
                          "condition")

    def value(self) -> Value | tuple[str, int, str]:
        s = self.next()
        if re.fullmatch(r"\d+:[A-Za-z_]\w*", s):
            tid, reg = s.split(":")
            return ("reg", int(tid), reg)
        if re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", s):
            return _c_int(s, self.line)
        if re.fullmatch(r"[A-Za-z_]\w*", s):
            return Loc(s)
        raise LitmusError(f"line {self.line}: unsupported value '{s}' in the final condition")

    def prop(self) -> Prop:
        left = self.disj()
        if self.peek() == "==>":
            self.next()
            return Implies(left, self.prop())
        return left

    def disj(self) -> Prop:
        left = self.conj()
        while self.peek() == "\\/":
            self.next()
            left = Or(left, self.conj())
        return left

    def conj(self) -> Prop:
        left = self.unary()
        while self.peek() == "/\\":
            self.next()
            left = And(left, self.unary())
        return left

    def unary(self) -> Prop:
        s = self.peek()
        if s in ("~", "not"):
            self.next()
            return Not(self.unary())
        if s == "(":
            self.next()
            p = self.prop()
            self.expect(")")
            return p
        if s in ("true", "false"):
            self.next()
            return Const(s == "true")
        key = self.key()
        op = self.next()
        if op not in ("=", "==", "!="):
            raise LitmusError(f"line {self.line}: unsupported operator '{op}' in the final "
                              "condition")
        atom = Atom(key, self.value())
        return Not(atom) if op == "!=" else atom  # as herd7's state parser reads it


def _parse_final(text: str, line0: int, lit: Litmus) -> None:
    text = _ocaml_comments(text, line0, "final condition")
    text = re.sub(r"//[^\n]*", " ", text)
    p = _PropParser(text, line0)
    seen_quantifier = False
    while p.peek():
        word = p.next()
        if word == "locations":
            p.expect("[")
            while p.peek() != "]":
                if not p.peek():
                    raise LitmusError(f"line {line0}: missing ']' after 'locations'")
                if p.peek() == ";":
                    p.next()
                    continue
                lit.locations.append(p.key())
            p.next()
        elif word == "filter":
            lit.filter = p.prop()
        elif word in ("exists", "forall") or (word == "~" and p.peek() == "exists"):
            if word == "~":
                p.next()
                word = "~exists"
            lit.quantifier = word
            lit.prop = p.prop()
            seen_quantifier = True
            if p.peek():
                raise LitmusError(f"line {line0}: unexpected '{p.peek()}' after the final "
                                  "condition")
        else:
            raise LitmusError(f"line {line0}: unsupported construct '{word}' after the "
                              "processes")
    if not seen_quantifier:
        raise LitmusError(f"line {line0}: no final condition (exists, ~exists or forall)")


def _first_brace_outside_comments(text: str, pos: int) -> int:
    depth = 0
    i = pos
    while i < len(text):
        two = text[i:i + 2]
        if two == "(*":
            depth += 1
            i += 2
            continue
        if two == "*)" and depth:
            depth -= 1
            i += 2
            continue
        if two == "//" and depth == 0:  # herd7 also takes C++ comments in the header
            nl = text.find("\n", i)
            i = len(text) if nl < 0 else nl
            continue
        if text[i] == "{" and depth == 0:
            return i
        i += 1
    if depth:
        raise LitmusError(f"line {text.count(chr(10), 0, pos) + 1}: unterminated '(*' "
                          "comment in the header")
    return -1


def parse_litmus(text: str) -> Litmus:
    """Parse the text of a C litmus test; raise :class:`LitmusError` when it is not one
    pervma can run."""
    m = re.match(r"\s*(\S+)[ \t]+(\S+)[^\n]*", text)
    if m is None:
        raise LitmusError("line 1: empty file, expected 'C <test name>'")
    if m.group(1) != "C":
        raise LitmusError(f"line 1: unsupported architecture '{m.group(1)}' (only C litmus "
                          "tests are supported)")
    lit = Litmus(name=m.group(2))
    pos = m.end()

    def line_at(i: int) -> int:
        return text.count("\n", 0, i) + 1

    brace = _first_brace_outside_comments(text, pos)
    if brace < 0:
        raise LitmusError(f"line {line_at(pos)}: missing the initial state '{{...}}'")
    header = re.sub(r"//[^\n]*", " ", _ocaml_comments(text[pos:brace], line_at(pos), "header"))
    # herd7 takes a quoted documentation string and diy's 'Key=value' information
    # lines (Prefetch=, Com=, Orig=, ...) between the name and the initial state.
    if header.strip() and not re.fullmatch(
            r'\s*(("[^"]*"|[A-Za-z][\w.-]*[ \t]*=[^\n]*)\s*)*', header):
        raise LitmusError(f"line {line_at(pos)}: unexpected text before the initial state")
    # 'Result: Never' or 'Expected result: Never.'; other results ('Flag ...')
    # are not verdicts and are not checked.
    r = re.search(r"(?i)\bresult:\s*(never|sometimes|always|deadlock)\b", text[pos:brace])
    if r:
        word = r.group(1).lower()
        lit.expected = "DEADLOCK" if word == "deadlock" else word.capitalize()
    end = text.find("}", brace)
    if end < 0:
        raise LitmusError(f"line {line_at(brace)}: missing '}}' after the initial state")
    _parse_init(text[brace + 1:end], line_at(brace), lit)
    pos = end + 1
    # A second block of preprocessor lines ('{ #include "api.h" }', litmus7's
    # prelude for running the test on hardware).  herd7 rejects it (perfbook's
    # litmus2herd.sh strips it before running herd7); pervma skips it.
    pre = re.match(_GAP + r"\{((?:\s|#[^\n]*|//[^\n]*)*)\}", text[pos:], re.DOTALL)
    if pre is not None:
        pos += pre.end()
    while True:
        pm = _PROC_HEAD.match(text, pos)
        if pm is None:
            break
        tid = int(pm.group(1))
        if tid != len(lit.processes):
            raise LitmusError(f"line {line_at(pm.start(1))}: process P{tid} out of order")
        params = []
        for part in pm.group(2).split(","):
            words = re.findall(r"[A-Za-z_]\w*", part)
            if words and words != ["void"]:
                params.append(words[-1])
        open_brace = pm.end() - 1
        close = _matching_brace(text, open_brace, line_at(open_brace))
        toks = _Tokens(text[open_brace:close], line_at(open_brace))
        body = _parse_block(toks)
        lit.processes.append(Process(tid, tuple(params), body))
        pos = close
    if not lit.processes:
        raise LitmusError(f"line {line_at(pos)}: no process 'P0(...) {{...}}'")
    _parse_final(text[pos:], line_at(pos), lit)
    return lit
