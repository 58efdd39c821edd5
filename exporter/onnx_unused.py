"""Drop nodes and initializers nothing reads, so that ONNX Runtime loads the artifact without warnings.

The graph rewrites (``onnx_empty.py``, ``onnx_scatter.py``) and constant
folding can leave constants (``Constant`` nodes, initializers) and nodes
behind whose outputs no node reads any more. ONNX Runtime removes them
itself when it creates a session, but prints "Removing initializer ...
It is not used by any node" for each.
"""

from typing import Set

import onnx


def _names_read(graph: onnx.GraphProto) -> Set[str]:
    """Every value name a node of ``graph`` (or of a subgraph in its attributes) reads, and the graph outputs."""
    names = {output.name for output in graph.output}
    for node in graph.node:
        names.update(node.input)
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                names |= _names_read(attribute.g)
            elif attribute.type == onnx.AttributeProto.GRAPHS:
                for subgraph in attribute.graphs:
                    names |= _names_read(subgraph)
    return names


def drop_unused_values(model: onnx.ModelProto) -> int:
    """Remove the main graph's nodes whose outputs nothing reads (repeatedly), then unread initializers.

    ONNX operators have no side effects, so a node none of whose outputs is
    read can go. Returns how many nodes and initializers were removed.
    """
    graph = model.graph
    removed = 0
    while True:
        read = _names_read(graph)
        dead = [node for node in graph.node if not any(output in read for output in node.output if output)]
        if not dead:
            break
        for node in dead:
            graph.node.remove(node)
        removed += len(dead)
    read = _names_read(graph)
    unused = [initializer for initializer in graph.initializer if initializer.name not in read]
    for initializer in unused:
        graph.initializer.remove(initializer)
    return removed + len(unused)


__all__ = ["drop_unused_values"]
