"""The folders under services/ depend only downwards: no two reach each other through includes.

Bazel refuses a loop between targets, not between folders: services/engine could include
services/feeds while a file in services/feeds includes services/decisions, which includes
services/engine, and every target would still build. This test reads the #include lines of
every library file (tests excepted: a test may use what sits above its component) and fails on
any loop between folders, naming it.
"""
import collections
import os
import re
import unittest

INCLUDE = re.compile(r'#include "(services/[^/"]+)/')


def FolderGraph(root):
    graph = collections.defaultdict(set)
    services = os.path.join(root, "services")
    for folder in sorted(os.listdir(services)):
        path = os.path.join(services, folder)
        if not os.path.isdir(path):
            continue
        name = "services/" + folder
        graph[name]  # every folder is a node, even one that includes nothing
        for dirpath, _, files in os.walk(path):
            for f in files:
                if not f.endswith((".h", ".cc")) or f.endswith("_test.cc"):
                    continue
                with open(os.path.join(dirpath, f), encoding="utf-8") as src:
                    for line in src:
                        m = INCLUDE.match(line)
                        if m and m.group(1) != name:
                            graph[name].add(m.group(1))
    return graph


def FindLoop(graph):
    """Returns one loop as a list of folders (first == last), or None."""
    state = {}

    def Visit(node, path):
        state[node] = "open"
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                loop = Visit(nxt, path + [nxt])
                if loop:
                    return loop
        state[node] = "done"
        return None

    for node in sorted(graph):
        if node not in state:
            loop = Visit(node, [node])
            if loop:
                return loop
    return None


class LayoutTest(unittest.TestCase):

    def test_folders_depend_only_downwards(self):
        root = os.environ.get("TEST_SRCDIR", ".") + "/palisade"
        graph = FolderGraph(root)
        self.assertIn("services/engine", graph)
        loop = FindLoop(graph)
        self.assertIsNone(loop, "folders include each other: " + " -> ".join(loop or []))

    def test_a_loop_is_found(self):
        graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
        self.assertEqual(FindLoop(graph), ["a", "b", "c", "a"])
        self.assertIsNone(FindLoop({"a": {"b"}, "b": set(), "c": {"a", "b"}}))


if __name__ == "__main__":
    unittest.main()
