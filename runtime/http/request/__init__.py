"""runtime/http/request"""
