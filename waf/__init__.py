"""The ModSecurity adapter: compile a bundle plus a policy into a rule set, map a request to a
transaction, collect what matched. A library: never imports ``appliance``, ``rules`` or the others.
"""
