"""Remove the identity ``Transpose`` nodes of an exported ONNX graph.

onnxscript translates ``index_put`` (and some reshapes of the captured
backward) with a ``Transpose`` on each side whose ``perm`` is the identity
(``[0, 1]`` for a 2-D tensor). ONNX Runtime (1.31) does not drop them: each
one is a full copy into freshly allocated memory. On the PaiNN h512 ONNX
graph (1,008-atom bulk) there were 47 of them, 35% of the call's kernel
time (ORT profiler). onnxscript's optimizer would remove them, but we do
not run it (``write_onnx._fold_constants`` says why), hence this pass.

``drop_identity_transposes(model)`` rewires every consumer of such a node
to the node's input and deletes it, in place. Nodes whose output is a graph
output are kept (the output name must stay). Graphs with subgraphs
(If/Loop/Scan) are left untouched, since names there may refer to the
outer graph.
"""

from typing import Dict, List

import onnx

TRANSPOSE = "Transpose"
PERM = "perm"


def _identity_perm(node: onnx.NodeProto) -> bool:
    for attribute in node.attribute:
        if attribute.name == PERM:
            return list(attribute.ints) == list(range(len(attribute.ints)))
    return False  # no perm: reverses the axes, identity only for rank <= 1 (unknown here)


def _has_subgraphs(graph: onnx.GraphProto) -> bool:
    return any(
        attribute.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS)
        for node in graph.node
        for attribute in node.attribute
    )


def drop_identity_transposes(model: onnx.ModelProto) -> int:
    """Delete identity-``perm`` Transpose nodes of ``model`` (in place); returns how many."""
    graph = model.graph
    if _has_subgraphs(graph):
        return 0
    graph_outputs = {output.name for output in graph.output}
    replacement: Dict[str, str] = {}
    kept: List[onnx.NodeProto] = []
    for node in graph.node:
        if node.op_type == TRANSPOSE and _identity_perm(node) and node.output[0] not in graph_outputs:
            source = node.input[0]
            replacement[node.output[0]] = replacement.get(source, source)
            continue
        kept.append(node)
    for node in kept:
        for position, name in enumerate(node.input):
            if name in replacement:
                node.input[position] = replacement[name]
    del graph.node[:]
    graph.node.extend(kept)
    return len(replacement)
