"""A tiny ToolScale-format domain for tests: a library lending books to members.

It is what a user's own domain looks like: a `DB`, a `Toolkit`, and `build_domain`, over
a data folder with db.json, policy.md, tasks.json and split_tasks.json (`write_data`).
Load it with `load_domain("toy_domain", folder)`.
"""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import BaseModel

from orchestra.envs.domains import DB, Domain, Toolkit, tool

POLICY = "You are a librarian. Find the book by its title, then lend it to the member."


class Book(BaseModel):
  title: str
  copies: int


class Member(BaseModel):
  name: str
  loans: list[str]


class LibraryDB(DB):
  books: dict[str, Book]
  members: dict[str, Member]


class LibraryTools(Toolkit):

  @tool("read")
  def find_book(self, title: str) -> str:
    """Finds a book's id by its exact title.

    Args:
      title: The book's title.
    """
    for book_id, book in self.db.books.items():
      if book.title == title:
        return book_id
    raise ValueError("Book not found")

  @tool("write")
  def lend_book(self, member_id: str, book_id: str) -> Member:
    """Lends one copy of a book to a member.

    Args:
      member_id: The member's id, such as 'm1'.
      book_id: The book's id, such as 'b1'.
    """
    if member_id not in self.db.members:
      raise ValueError("Member not found")
    if book_id not in self.db.books:
      raise ValueError("Book not found")
    book, member = self.db.books[book_id], self.db.members[member_id]
    if book.copies < 1:
      raise ValueError("No copy left")
    book.copies -= 1
    member.loans.append(book_id)
    return member


  def has_loan(self, member_id: str, book_id: str) -> bool:
    """Not a tool: what env assertions call on the final state."""
    return book_id in self.db.members[member_id].loans


def build_domain(data_dir) -> Domain:
  return Domain.from_dir("library", data_dir, LibraryDB, LibraryTools)


BOOKS = {"b1": ("Dune", 2), "b2": ("Emma", 1), "b3": ("Ulysses", 3), "b4": ("Walden", 1)}
MEMBERS = {"m1": "Ada", "m2": "Bo", "m3": "Cy"}
LOANS = [("m1", "b1"), ("m2", "b2"), ("m3", "b3"), ("m1", "b4"), ("m2", "b3"), ("m3", "b1")]


def task(i: int, member: str, book: str) -> dict:
  title = BOOKS[book][0]
  return {
      "id": str(i),
      "user_scenario": {"instructions": {
          "domain": "library", "reason_for_call": f"You want to borrow '{title}'.",
          "known_info": f"Your member id is {member}.", "unknown_info": None,
          "task_instructions": "Ask for the book."}},
      "evaluation_criteria": {
          "actions": [
              {"action_id": f"{i}_0", "name": "find_book", "arguments": {"title": title}},
              {"action_id": f"{i}_1", "name": "lend_book",
               "arguments": {"member_id": member, "book_id": book}}],
          "communicate_info": [book],
          "reward_basis": ["DB", "COMMUNICATE"]},
  }


def write_data(root) -> Path:
  """Writes `root/domains/library/` and returns `root`."""
  folder = Path(root) / "domains" / "library"
  folder.mkdir(parents=True, exist_ok=True)
  db = {"books": {k: {"title": t, "copies": c} for k, (t, c) in BOOKS.items()},
        "members": {k: {"name": n, "loans": []} for k, n in MEMBERS.items()}}
  (folder / "db.json").write_text(json.dumps(db))
  (folder / "policy.md").write_text(POLICY)
  tasks = [task(i, m, b) for i, (m, b) in enumerate(LOANS)]
  tasks.append(task(len(LOANS), "m3", "b2"))           # graded by env assertions alone
  tasks[-1]["evaluation_criteria"].update(reward_basis=["ENV_ASSERTION"], env_assertions=[
      {"env_type": "assistant", "func_name": "has_loan",
       "arguments": {"member_id": "m3", "book_id": "b2"}},
      {"env_type": "assistant", "func_name": "has_loan", "assert_value": False,
       "arguments": {"member_id": "m1", "book_id": "b2"}, "message": "only m3 borrows it"}])
  (folder / "tasks.json").write_text(json.dumps(tasks))
  (folder / "split_tasks.json").write_text(json.dumps({"train": ["0", "1", "2", "3"],
                                                       "test": ["4", "5"]}))
  return Path(root)
