"""mmrface.web"""
