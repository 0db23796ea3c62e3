"""LIT components for captum-erasure (model wrapper, interpreters, generators).

Empty until the LIT plugin issue lands; the package exists so the distribution layout is fixed.
"""
