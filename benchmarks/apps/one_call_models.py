"""Server benchmark: `one_call.py`'s one call in the shape most applications have, a pydantic
model in and out. `warm.py first_call` times its first call beside `one_call.py`'s: a function's
executor imports its module in `Initialize`, before the first call is dispatched, and pydantic
is the import most applications share.
"""

from pydantic import BaseModel

from engine import application, function


class Item(BaseModel):
    x: int


@application()
@function()
def one_model(item: Item) -> Item:
    return Item(x=item.x + 1)
