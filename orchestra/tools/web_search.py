"""`web_search`: Tavily web search (`pip install -e ".[search]"`, key in TAVILY_API_KEY).

Cost per call: `price_per_call` (Tavily's $0.01 per basic search by default).
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

from orchestra.tools.base import Tool, ToolConfigError, ToolResult


class WebSearch(Tool):
  """Args:
    api_key_env: environment variable with the Tavily key (checked at construction).
    max_results: results per query.
    price_per_call: USD per search.
    max_chars: characters kept per result.
    client: a ready client with `.search(query, max_results=..., search_depth=...)`
      (tests pass a fake; by default a `tavily.TavilyClient`).
  """

  name = "web_search"
  description = "Search the web; returns titles, URLs and snippets of the top results."

  def __init__(self, *, api_key_env: str = "TAVILY_API_KEY", max_results: int = 5,
               price_per_call: float = 0.01, search_depth: str = "basic", max_chars: int = 600,
               client: Any = None):
    if client is None:
      key = os.environ.get(api_key_env)
      if not key:
        raise ToolConfigError(f"web_search: environment variable {api_key_env} is not set "
                              "(get a Tavily key, or remove web_search from the tool config)")
      try:
        from tavily import TavilyClient
      except ImportError:
        raise ToolConfigError('web_search needs tavily-python: pip install -e ".[search]"') from None
      client = TavilyClient(api_key=key)
    self.client = client
    self.max_results, self.price_per_call = max_results, price_per_call
    self.search_depth, self.max_chars = search_depth, max_chars
    self.parameters = {"type": "object", "additionalProperties": False, "required": ["query"],
                       "properties": {"query": {"type": "string", "description": "search query"}}}

  async def run(self, args: dict[str, Any]) -> ToolResult:
    query = args["query"].strip()
    if not query:
      return ToolResult(text="Error: empty query", error="empty query")
    response = await asyncio.to_thread(self.client.search, query, max_results=self.max_results,
                                       search_depth=self.search_depth)
    results = response.get("results", []) if isinstance(response, dict) else []
    if not results:
      return ToolResult(text="No results.", cost_usd=self.price_per_call, usage={"results": 0})
    lines = [f"[{i + 1}] {r.get('title', '')}\n{r.get('url', '')}\n"
             f"{(r.get('content') or '')[:self.max_chars]}" for i, r in enumerate(results)]
    return ToolResult(text="\n\n".join(lines), cost_usd=self.price_per_call,
                      usage={"results": len(results)})
