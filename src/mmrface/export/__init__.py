"""mmrface.export"""
