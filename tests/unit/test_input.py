"""Application input: JSON from the command line (or Python arguments) validated against the
application's type hints. Every mismatch is an InputError naming the field."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel

from engine import application, function
from engine.app import parse_input, to_json, validate_input
from engine.errors import InputError, SDKUsageError


class Address(BaseModel):
    city: str
    zip_code: int


class Person(BaseModel):
    name: str
    age: int
    address: Address | None = None


@application()
@function()
def one_str(question: str) -> str:
    return question


@application()
@function()
def one_list(values: list[int]) -> int:
    return sum(values)


@application()
@function()
def one_dict(options: dict[str, int]) -> int:
    return len(options)


@application()
@function()
def several(name: str, times: int = 2, loud: bool = False) -> str:
    return name


@application()
@function()
def model_param(person: Person) -> str:
    return person.name


@application()
@function()
def no_params() -> str:
    return "ok"


@application()
@function()
def untyped(anything):  # type: ignore[no-untyped-def]
    return anything


def test_one_parameter_takes_the_json_value() -> None:
    assert parse_input(one_str, '"why?"') == {"question": "why?"}
    assert parse_input(one_list, "[1, 2, 3]") == {"values": [1, 2, 3]}
    assert parse_input(one_dict, '{"a": 1}') == {"options": {"a": 1}}
    assert parse_input(untyped, '{"x": [1, null]}') == {"anything": {"x": [1, None]}}


def test_several_parameters_take_an_object() -> None:
    assert parse_input(several, '{"name": "ada"}') == {"name": "ada"}
    assert parse_input(several, '{"name": "ada", "times": 3, "loud": true}') == {
        "name": "ada", "times": 3, "loud": True}


def test_pydantic_model_parameter() -> None:
    kwargs = parse_input(model_param, '{"name": "ada", "age": 36, "address": '
                                      '{"city": "London", "zip_code": 1}}')
    person = kwargs["person"]
    assert isinstance(person, Person) and isinstance(person.address, Address)
    assert (person.name, person.age, person.address.city) == ("ada", 36, "London")
    assert to_json(person) == {"name": "ada", "age": 36,
                               "address": {"city": "London", "zip_code": 1}}


def test_no_input() -> None:
    assert parse_input(no_params, None) == {}
    assert parse_input(no_params, "null") == {}
    with pytest.raises(InputError, match="no input"):
        parse_input(no_params, "3")
    with pytest.raises(InputError, match="question"):
        parse_input(one_str, None)
    with pytest.raises(InputError, match="name"):
        parse_input(several, None)


@pytest.mark.parametrize(
    "fn, text, field",
    [
        (one_str, "42", "question"),
        (one_list, '[1, "two"]', r"values\.1"),
        (one_list, '"1,2"', "values"),
        (several, '{"name": "ada", "times": "many"}', "times"),
        (several, '{"times": 3}', "name"),
        (several, '{"name": "ada", "colour": "red"}', "colour"),
        (model_param, '{"name": "ada"}', r"person\.age"),
        (model_param, '{"name": "ada", "age": "old"}', r"person\.age"),
        (model_param, '{"name": "ada", "age": 1, "address": {"city": "X", "zip_code": "Y"}}',
         r"person\.address\.zip_code"),
    ],
)
def test_wrong_types_name_the_field(fn: Any, text: str, field: str) -> None:
    with pytest.raises(InputError, match=field) as info:
        parse_input(fn, text)
    assert "\n" not in str(info.value)
    assert isinstance(info.value, SDKUsageError)


def test_several_parameters_need_an_object() -> None:
    with pytest.raises(InputError, match="JSON object"):
        parse_input(several, '["ada", 3]')


@pytest.mark.parametrize("text", ["{", "not json", "'single'", "[1, 2,]", ""])
def test_malformed_json(text: str) -> None:
    with pytest.raises(InputError, match="not valid JSON"):
        parse_input(one_str, text)


def test_validate_input_binds_positional_and_keyword_arguments() -> None:
    assert validate_input(several, ("ada",), {"times": "3"}) == {"name": "ada", "times": 3}
    with pytest.raises(InputError, match="given twice"):
        validate_input(several, ("ada",), {"name": "bob"})
    with pytest.raises(InputError, match="takes 3"):
        validate_input(several, ("a", 1, True, "extra"), {})
    with pytest.raises(InputError, match="no parameter 'nope'"):
        validate_input(several, (), {"name": "a", "nope": 1})
    with pytest.raises(InputError, match="person"):
        validate_input(model_param, ({"name": "ada"},), {})
    kwargs = validate_input(model_param, (Person(name="ada", age=3),), {})
    assert kwargs["person"].age == 3
