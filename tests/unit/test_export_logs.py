"""ONNX export drops the exporter's known-harmless log lines and keeps every other one."""

import logging

from ocpdeploy.exporter.write_onnx import KNOWN_HARMLESS_LOGS, _without_known_harmless_logs


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_known_harmless_lines_are_dropped_and_others_kept():
    for name, start in KNOWN_HARMLESS_LOGS:
        logger = logging.getLogger(name)
        collect = _Collect()
        logger.addHandler(collect)
        try:
            with _without_known_harmless_logs():
                logger.warning(start + " (details)")
                logger.warning("a real problem")
            logger.warning(start)  # outside an export: untouched
        finally:
            logger.removeHandler(collect)
        assert collect.messages == ["a real problem", start], name
