"""The gRPC messages, read from ``grpc_inference.proto`` when the gRPC side first starts.

Why no generated ``_pb2`` files: generated code is tied to the protobuf release that made it
(a newer or older runtime refuses it), and compiling at import with ``grpc_tools`` would make
grpcio-tools a dependency whose protobuf pin (7.x for current releases) conflicts with
tritonclient's (<7), so one environment could not hold both. Instead this module reads our
own ``.proto`` -- the small proto3 subset it uses: messages (nested), enums, scalar, message,
``repeated`` and ``map<,>`` fields, ``oneof``, and one service -- into a descriptor, and lets
the installed protobuf build the message classes. The ``.proto`` stays the one source of truth
and any protobuf 4.21+ runtime works.
"""

from __future__ import annotations

import functools
import re
from pathlib import Path

PROTO = Path(__file__).with_name("grpc_inference.proto")

_TOKEN = re.compile(r"//[^\n]*|/\*.*?\*/|([A-Za-z_][\w.]*|\d+|\"[^\"]*\"|[{}()<>;=,\[\]])", re.S)
_SCALARS = {
    "double": 1,
    "float": 2,
    "int64": 3,
    "uint64": 4,
    "int32": 5,
    "fixed64": 6,
    "fixed32": 7,
    "bool": 8,
    "string": 9,
    "bytes": 12,
    "uint32": 13,
    "sfixed32": 15,
    "sfixed64": 16,
    "sint32": 17,
    "sint64": 18,
}
_MESSAGE, _ENUM = 11, 14
_OPTIONAL, _REPEATED = 1, 3


class ProtoSyntaxError(Exception):
    pass


class _Tokens:
    def __init__(self, text: str):
        self.items = [m.group(1) for m in _TOKEN.finditer(text) if m.group(1)]
        self.pos = 0

    def peek(self) -> str | None:
        return self.items[self.pos] if self.pos < len(self.items) else None

    def next(self) -> str:
        token = self.peek()
        if token is None:
            raise ProtoSyntaxError("the .proto file ends too early")
        self.pos += 1
        return token

    def expect(self, want: str) -> None:
        got = self.next()
        if got != want:
            raise ProtoSyntaxError(f"expected {want!r} in the .proto file, got {got!r}")


def parse(text: str):
    """A ``FileDescriptorProto`` for the proto3 subset described in the module docstring."""
    from google.protobuf import descriptor_pb2

    fdp = descriptor_pb2.FileDescriptorProto(name="maas_lab/grpc_inference.proto", syntax="proto3")
    tokens = _Tokens(text)
    while tokens.peek() is not None:
        word = tokens.next()
        if word == "syntax":
            tokens.expect("=")
            if tokens.next() != '"proto3"':
                raise ProtoSyntaxError("only proto3 is supported")
            tokens.expect(";")
        elif word == "package":
            fdp.package = tokens.next()
            tokens.expect(";")
        elif word == "message":
            _message(tokens, fdp.message_type.add())
        elif word == "enum":
            _enum(tokens, fdp.enum_type.add())
        elif word == "service":
            _service(tokens, fdp.service.add())
        else:
            raise ProtoSyntaxError(f"unexpected {word!r} at the top of the .proto file")
    _resolve(fdp)
    return fdp


def _message(tokens: _Tokens, msg) -> None:
    msg.name = tokens.next()
    tokens.expect("{")
    while (word := tokens.next()) != "}":
        if word == "message":
            _message(tokens, msg.nested_type.add())
        elif word == "enum":
            _enum(tokens, msg.enum_type.add())
        elif word == "oneof":
            index = len(msg.oneof_decl)
            msg.oneof_decl.add(name=tokens.next())
            tokens.expect("{")
            while tokens.peek() != "}":
                field = _field(tokens, msg, tokens.next(), _OPTIONAL)
                field.oneof_index = index
            tokens.expect("}")
        elif word == "map":
            tokens.expect("<")
            key = tokens.next()
            tokens.expect(",")
            value = tokens.next()
            tokens.expect(">")
            field = _field(tokens, msg, "", _REPEATED, named_type=False)
            entry = msg.nested_type.add(name=_camel(field.name) + "Entry")
            entry.options.map_entry = True
            _typed(entry.field.add(name="key", number=1, label=_OPTIONAL), key)
            _typed(entry.field.add(name="value", number=2, label=_OPTIONAL), value)
            field.type, field.type_name = _MESSAGE, entry.name
        elif word == "repeated":
            _field(tokens, msg, tokens.next(), _REPEATED)
        else:
            _field(tokens, msg, word, _OPTIONAL)


def _field(tokens: _Tokens, msg, type_name: str, label: int, named_type: bool = True):
    field = msg.field.add(name=tokens.next(), label=label)
    field.json_name = _lower_camel(field.name)
    tokens.expect("=")
    field.number = int(tokens.next())
    tokens.expect(";")
    if named_type:
        _typed(field, type_name)
    return field


def _typed(field, type_name: str) -> None:
    if type_name in _SCALARS:
        field.type = _SCALARS[type_name]
    else:
        field.type_name = type_name  # resolved to a full name (and message or enum) later


def _enum(tokens: _Tokens, enum) -> None:
    enum.name = tokens.next()
    tokens.expect("{")
    while (word := tokens.next()) != "}":
        tokens.expect("=")
        enum.value.add(name=word, number=int(tokens.next()))
        tokens.expect(";")


def _service(tokens: _Tokens, service) -> None:
    service.name = tokens.next()
    tokens.expect("{")
    while (word := tokens.next()) != "}":
        if word != "rpc":
            raise ProtoSyntaxError(f"unexpected {word!r} in service {service.name}")
        method = service.method.add(name=tokens.next())
        tokens.expect("(")
        method.input_type = tokens.next()
        tokens.expect(")")
        tokens.expect("returns")
        tokens.expect("(")
        method.output_type = tokens.next()
        tokens.expect(")")
        tokens.expect("{")
        tokens.expect("}")


def _resolve(fdp) -> None:
    """Relative type names to full ones (``.inference.X``), looked up from the inside out
    the way protoc does, and each field marked message or enum."""
    kinds: dict[str, int] = {}

    def collect(scope: str, messages, enums):
        for e in enums:
            kinds[f"{scope}.{e.name}"] = _ENUM
        for m in messages:
            kinds[f"{scope}.{m.name}"] = _MESSAGE
            collect(f"{scope}.{m.name}", m.nested_type, m.enum_type)

    top = f".{fdp.package}" if fdp.package else ""
    collect(top, fdp.message_type, fdp.enum_type)

    def lookup(scope: str, name: str) -> str:
        parts = scope.split(".")
        while parts:
            candidate = ".".join(parts + [name])
            if candidate in kinds:
                return candidate
            parts.pop()
        raise ProtoSyntaxError(f"unknown type {name!r} in the .proto file")

    def walk(scope: str, messages):
        for m in messages:
            inner = f"{scope}.{m.name}"
            for field in m.field:
                if field.type_name and not field.type_name.startswith("."):
                    field.type_name = lookup(inner, field.type_name)
                    field.type = kinds[field.type_name]
            walk(inner, m.nested_type)

    walk(top, fdp.message_type)
    for service in fdp.service:
        for method in service.method:
            method.input_type = lookup(top, method.input_type)
            method.output_type = lookup(top, method.output_type)


def _camel(name: str) -> str:
    return "".join(part[:1].upper() + part[1:] for part in name.split("_"))


def _lower_camel(name: str) -> str:
    camel = _camel(name)
    return camel[:1].lower() + camel[1:]


class Protocol:
    """The message classes by name (``protocol.ModelInferRequest``) and the service's
    methods as ``{name: (request class, response class)}``."""

    def __init__(self, text: str):
        from google.protobuf import descriptor_pool, message_factory

        fdp = parse(text)
        # A pool of our own: tritonclient (in the same process, in tests) registers the
        # same full names in the default pool from its own files.
        self.pool = descriptor_pool.DescriptorPool()
        self.pool.Add(fdp)
        self.package = fdp.package
        self._classes: dict[str, type] = {}
        for msg in fdp.message_type:
            full = f"{fdp.package}.{msg.name}"
            self._classes[msg.name] = message_factory.GetMessageClass(
                self.pool.FindMessageTypeByName(full)
            )
        service = fdp.service[0]
        self.service = f"{fdp.package}.{service.name}"
        self.methods = {
            m.name: (self._by_full(m.input_type), self._by_full(m.output_type))
            for m in service.method
        }
        self.data_types = {
            v.name: v.number for v in next(e for e in fdp.enum_type if e.name == "DataType").value
        }

    def _by_full(self, full: str) -> type:
        return self._classes[full.rsplit(".", 1)[1]]

    def __getattr__(self, name: str) -> type:
        try:
            return self._classes[name]
        except KeyError:
            raise AttributeError(name) from None


@functools.cache
def protocol() -> Protocol:
    return Protocol(PROTO.read_text())
