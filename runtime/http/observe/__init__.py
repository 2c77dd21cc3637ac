"""runtime/http/observe"""
