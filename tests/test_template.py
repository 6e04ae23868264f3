"""segdl.batch.template: template syntax, hostile field values, built-ins and aria2 paths."""

from __future__ import annotations

from pathlib import PurePosixPath

import pytest

from segdl.batch.template import DEFAULT, Template, TemplateError, safe_relative
from segdl.core.naming import truncate_name
from segdl.errors import SegdlError, UsageError


def render(text: str, index: int = 0, name: str | None = None, **fields: str) -> PurePosixPath:
    return Template.parse(text).render(fields, index=index, name=name)


def assert_safe(path: PurePosixPath, max_bytes: int = 255) -> None:
    assert not path.is_absolute()
    assert path.parts
    for part in path.parts:
        assert part not in ("", ".", "..")
        assert "/" not in part
        assert "\\" not in part
        assert "\x00" not in part
        assert len(part.encode("utf-8")) <= 255
    assert len(path.name.encode("utf-8")) <= max_bytes


# --- parse -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("", "empty"),
        ("{", "Single '{'"),
        ("}", "Single '}'"),
        ("a{b", "expected '}'"),
        ("{a!r}", "conversions"),
        ("{a!x}", "conversions"),
        ("{a:>10}", "format specs"),
        ("{index:05d}", "format specs"),
        ("{a:{b}}", "format specs"),
        ("{a.b}", "attribute and index"),
        ("{a[0]}", "attribute and index"),
        ("{}", "field name"),
        ("{ a }", "spaces"),
        ("/abs/{name}", "absolute"),
        ("/", "absolute"),
        ("../{name}", "'..'"),
        ("a/../{name}", "'..'"),
        ("..", "'..'"),
        ("./{name}", "'.'"),
        ("{id}/.", "'.'"),
        ("a//{name}", "'//'"),
        ("{name}/", "trailing"),
        ("a\\{name}", "backslash"),
        ("..\\{name}", "backslash"),
        ("a\x00{name}", "control"),
        ("a\n{name}", "control"),
        ("\u202e{name}", "control"),
    ],
)
def test_parse_errors(text: str, words: str) -> None:
    with pytest.raises(UsageError) as info:
        Template.parse(text)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize(
    ("text", "fields", "needs_name"),
    [
        (DEFAULT, {"name"}, True),
        ("{index}", {"index"}, False),
        ("{id}/{stem}-{index}{ext}", {"id", "stem", "index", "ext"}, True),
        ("images/{label}/{id}.jpg", {"label", "id"}, False),
        ("{{literal}}", set(), False),
        ("..{id}/a..b/...", {"id"}, False),
        ("{image id}/{1}", {"image id", "1"}, False),
    ],
)
def test_fields_and_needs_name(text: str, fields: set[str], needs_name: bool) -> None:
    template = Template.parse(text)
    assert template.fields == fields
    assert template.needs_name is needs_name
    assert template.text == text


def test_templates_are_values() -> None:
    assert Template.parse("{id}") == Template("{id}")
    assert Template("{id}") != Template("{name}")
    with pytest.raises(UsageError):
        Template("../{id}")  # direct construction is checked too


# --- render ----------------------------------------------------------------------------


def test_render_plain() -> None:
    assert render("images/{label}/{id}.jpg", label="cat", id="42") == PurePosixPath(
        "images/cat/42.jpg"
    )
    assert render("{{{id}}}", id="x") == PurePosixPath("{x}")
    assert render("{index}-{id}", index=7, id="x") == PurePosixPath("7-x")


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("../../x", "___.._x"),
        ("/etc/passwd", "_etc_passwd"),
        ("a\\b", "a_b"),
        ("..\\..\\windows", "___.._windows"),
        (".hidden", "_hidden"),
        ("...", "___"),
        ("  padded  ", "padded"),
        ("x\x00y", "xy"),
        ("tab\tand\nnewline", "tabandnewline"),
        ("photo\u202egpj.exe", "photogpj.exe"),
        ("line\u2028sep", "linesep"),
        ("\x00.x", "_x"),
        ("café 日本語 🐈", "café 日本語 🐈"),
        ("a/b/c", "a_b_c"),
    ],
)
def test_hostile_values_stay_one_component(value: str, expected: str) -> None:
    path = render("out/{v}", v=value)
    assert_safe(path)
    assert path == PurePosixPath("out", expected)


@pytest.mark.parametrize(
    "value", ["", " ", "\x00", ".", "..", " .. ", "\u202e", "\x00.\x01", "\x00.."]
)
def test_values_that_leave_nothing_safe_fail_the_item(value: str) -> None:
    with pytest.raises(TemplateError, match="field 'v' is empty or a dot name"):
        render("{v}.jpg", v=value)


def test_values_are_sanitized_wherever_they_stand() -> None:
    # A value in the middle cannot add a separator or a ".." either.
    path = render("p{a}q/x", a="../..")
    assert path == PurePosixPath("p___..q", "x")
    assert_safe(path)


def test_missing_field_is_named() -> None:
    with pytest.raises(TemplateError, match="no field 'label'"):
        render("{label}/{id}", id="1")


def test_template_error_is_a_value_error_and_a_segdl_error() -> None:
    assert issubclass(TemplateError, ValueError)
    assert issubclass(TemplateError, SegdlError)
    assert not issubclass(TemplateError, UsageError)  # an item fails, not the run


# --- built-ins -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "stem", "ext"),
    [
        ("archive.tar.gz", "archive.tar", ".gz"),
        ("photo.JPG", "photo", ".JPG"),
        ("README", "README", ""),
        ("v1.2 notes", "v1", ".2 notes"),
        ("trailing.", "trailing", "."),
    ],
)
def test_stem_and_ext(name: str, stem: str, ext: str) -> None:
    assert render("{stem}", name=name) == PurePosixPath(stem)
    if ext:
        assert render("x{ext}", name=name) == PurePosixPath("x" + ext)
    else:
        assert render("x{ext}", name=name) == PurePosixPath("x")
    assert render("{stem}{ext}", name=name) == PurePosixPath(name)
    assert render(DEFAULT, name=name) == PurePosixPath(name)


def test_builtins_win_over_record_fields() -> None:
    template = Template.parse("{index}/{name}")
    fields = {"index": "999", "name": "from-record"}
    assert template.render(fields, index=3, name="remote.bin") == PurePosixPath("3/remote.bin")


@pytest.mark.parametrize("text", ["{name}", "{stem}", "x{ext}"])
def test_name_fields_need_the_name(text: str) -> None:
    assert Template.parse(text).needs_name
    with pytest.raises(TemplateError, match="remote's file name"):
        Template.parse(text).render({}, index=0)


def test_a_hostile_name_is_sanitized_anyway() -> None:
    assert render("d/{name}", name="../../.bashrc") == PurePosixPath("d/___.._.bashrc")
    with pytest.raises(TemplateError):
        render("{name}", name="..")


def test_joined_pieces_that_make_a_dot_name_fail() -> None:
    # Each piece is fine alone; together they would climb a folder.
    with pytest.raises(TemplateError, match="no safe file name"):
        render("a/{ext}{ext}", name="trailing.")


# --- length ----------------------------------------------------------------------------


def test_long_values_are_cut_keeping_the_extension() -> None:
    path = render("{title}/{title}.jpg", title="x" * 1000)
    assert_safe(path)
    assert path.parts[0] == "x" * 255
    assert path.name == "x" * 251 + ".jpg"


def test_long_multibyte_values_are_cut_between_characters() -> None:
    path = render("{t}.tar.gz", t="é" * 300)
    assert_safe(path)
    assert path.name.endswith("é.tar.gz")
    path.name.encode("utf-8").decode("utf-8")


def test_max_bytes_caps_only_the_file_name() -> None:
    path = Template.parse("{t}/{t}.bin").render({"t": "y" * 400}, index=0, max_bytes=249)
    assert_safe(path, max_bytes=249)
    assert len(path.parts[0]) == 255
    assert len(path.name) == 249
    assert path.name.endswith(".bin")


def test_truncate_name_keeps_behaviour() -> None:
    assert truncate_name("short.txt") == "short.txt"
    assert truncate_name("a" * 300 + ".tar.gz") == "a" * 248 + ".tar.gz"
    assert truncate_name("b" * 300, 10) == "b" * 10


# --- safe_relative ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x.iso", "x.iso"),
        ("sub/dir/x.iso", "sub/dir/x.iso"),
        ("sub\\dir\\x.iso", "sub/dir/x.iso"),
        ("./a//b/", "a/b"),
        (".hidden/.x", "_hidden/_x"),
        ("  spaced / name ", "spaced/name"),
        ("C:\\x", "C:/x"),
        ("a/\u202eb", "a/b"),
        ("…/…", "…/…"),
    ],
)
def test_safe_relative(text: str, expected: str) -> None:
    path = safe_relative(text)
    assert path == PurePosixPath(expected)
    assert_safe(path)


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("/etc/passwd", "absolute"),
        ("\\\\server\\share\\x", "absolute"),
        ("  /x", "absolute"),
        ("../x", "'..'"),
        ("a/../../x", "'..'"),
        ("a\\..\\x", "'..'"),
        ("", "empty path"),
        (".", "empty path"),
        ("./", "empty path"),
        ("a/\x00/b", "empty or a dot name"),
        ("a/ .. /b", "empty or a dot name"),
        ("a/\x00../b", "empty or a dot name"),
    ],
)
def test_safe_relative_refuses(text: str, words: str) -> None:
    with pytest.raises(TemplateError) as info:
        safe_relative(text)
    assert words in str(info.value)
    assert "\n" not in str(info.value)


def test_safe_relative_cuts_long_components() -> None:
    path = safe_relative("d" * 300 + "/" + "f" * 300 + ".bin", max_bytes=249)
    assert_safe(path, max_bytes=249)
    assert path.parts[0] == "d" * 255
    assert path.name == "f" * 245 + ".bin"


def test_a_cut_that_would_leave_a_bare_extension_fails() -> None:
    # The stem within the byte budget is all spaces: cutting it would leave ".jpg".
    template = Template.parse(" " * 260 + "{v}")
    with pytest.raises(TemplateError, match="no safe file name"):
        template.render({"v": "a.jpg"}, index=0)
