"""runtime/http/aio"""
