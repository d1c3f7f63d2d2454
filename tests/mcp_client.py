"""A real MCP client session against `mpw mcp`, for tests/mcp.rs.

Usage: python3 mcp_client.py MPW_BINARY REPOSITORY

Starts `mpw mcp` in REPOSITORY with the official Python SDK, goes through
the story below, and prints one JSON object: what each step answered. The
Rust test makes the assertions. A tool result that breaks its declared
output schema makes the SDK raise, which fails the test.
"""

import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


def answer(result):
    """A tool result as plain data."""
    texts = [c.text for c in result.content if getattr(c, "type", None) == "text"]
    return {
        "is_error": bool(result.is_error),
        "structured": result.structured_content,
        "text": "\n".join(texts),
    }


async def main(mpw, repo):
    params = StdioServerParameters(command=mpw, args=["mcp"], cwd=repo, env={"NO_COLOR": "1"})
    out = {}
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()

            async def call(name, args=None):
                return answer(await session.call_tool(name, args or {}))

            tools = (await session.list_tools()).tools
            out["tools"] = {
                t.name: {
                    "input_schema": t.input_schema,
                    "output_schema": t.output_schema,
                    "description": t.description,
                }
                for t in tools
            }
            out["plan_schema"] = await call("plan_schema")

            # A bad plan, as a file and as text; a path outside the repository.
            out["check_bad_file"] = await call("plan_check", {"path": "plans/bad.jsonc"})
            with open(f"{repo}/plans/bad.jsonc", encoding="utf-8") as f:
                out["check_bad_text"] = await call("plan_check", {"plan": f.read()})
            out["check_good"] = await call("plan_check", {"path": "plans/good.jsonc"})
            out["check_outside"] = await call("plan_check", {"path": "../outside.jsonc"})
            out["start_outside"] = await call("run_start", {"path": "../outside.jsonc"})
            out["start_bad"] = await call("run_start", {"path": "plans/bad.jsonc"})

            # A run, started detached, polled until it ends.
            started = await call("run_start", {"path": "plans/good.jsonc", "max_concurrency": 2})
            out["start"] = started
            run = started["structured"]["run_id"]
            polls = []
            while True:
                st = await call("run_status", {"run": run})
                polls.append(st["structured"]["state"] if st["structured"] else st["text"])
                if st["is_error"] or st["structured"]["state"] not in ("PENDING", "RUNNING"):
                    break
                await asyncio.sleep(0.1)
            out["polls"] = polls
            out["final_status"] = st
            out["latest_status"] = await call("run_status")

            # Logs.
            out["log"] = await call("task_logs", {"run": run, "task": "A/T1"})
            out["log_tail"] = await call("task_logs", {"run": run, "task": "A/T1", "tail": 1})
            out["log_stderr"] = await call("task_logs", {"run": run, "task": "A/T1", "stderr": True})
            out["log_missing"] = await call("task_logs", {"run": run, "task": "A/NOPE"})
            out["status_missing"] = await call("run_status", {"run": "NOSUCHRUN"})

            # Resources.
            resources = (await session.list_resources()).resources
            out["resources"] = [str(r.uri) for r in resources]
            templates = (await session.list_resource_templates()).resource_templates
            out["templates"] = [t.uri_template for t in templates]
            res = await session.read_resource(f"mpw://runs/{run}/run_status.json")
            out["status_resource"] = json.loads(res.contents[0].text)
            res = await session.read_resource(f"mpw://runs/{run}/events.jsonl")
            out["events_resource"] = [json.loads(l) for l in res.contents[0].text.splitlines()]

            # Forecast, then integrate.
            out["forecast"] = await call("integrate_forecast", {"run": run})
            out["integrate"] = await call("integrate", {"run": run, "into": "main", "gate": "test -f a.txt"})
            out["status_after_integrate"] = await call("run_status", {"run": run})
            out["pr"] = await call("pr_prepare", {"run": run})

            # A second run, stopped half way.
            slow = await call("run_start", {"path": "plans/slow.jsonc"})
            out["slow_start"] = slow
            out["cancel"] = await call("run_cancel", {"run": slow["structured"]["run_id"]})

            # A run that is still going when the client leaves.
            out["late_start"] = await call("run_start", {"path": "plans/late.jsonc"})
    print(json.dumps(out))


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
