"""mmrface.data"""
