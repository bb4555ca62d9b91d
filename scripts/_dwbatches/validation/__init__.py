"""A batch file checked, in pieces and alongside helper processes, and planned into chunks."""
