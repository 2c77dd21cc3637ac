"""runtime/http"""
