"""runtime/http/render"""
