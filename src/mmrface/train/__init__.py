"""mmrface.train"""
