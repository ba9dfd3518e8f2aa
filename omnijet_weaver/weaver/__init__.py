"""weaver"""
