"""runtime/http/middleware"""
