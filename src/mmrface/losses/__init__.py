"""mmrface.losses"""
